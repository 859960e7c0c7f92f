//! The parser: pest turns source text into a parse tree (grammar.pest), which this module
//! turns into the AST. A syntax error becomes a diagnostic; the parser then blanks the
//! offending line (when that keeps braces balanced) and tries again, so several independent
//! syntax errors are reported in one run.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use std::sync::LazyLock;

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct GdParser;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::or, Assoc::Left))
        .op(Op::infix(Rule::and, Assoc::Left))
        .op(Op::infix(Rule::eq, Assoc::Left)
            | Op::infix(Rule::ne, Assoc::Left)
            | Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::rem, Assoc::Left)
            | Op::infix(Rule::matmul, Assoc::Left))
        .op(Op::prefix(Rule::neg) | Op::prefix(Rule::not))
        .op(Op::infix(Rule::pow, Assoc::Right))
        .op(Op::postfix(Rule::transpose))
});

/// The most syntax errors reported for one file before giving up on recovery.
const MAX_SYNTAX_ERRORS: usize = 20;

/// Parses a whole file. On syntax errors the AST is empty and every error found is returned.
pub fn parse(source: &str) -> Result<File, Vec<Diagnostic>> {
    let mut text = source.to_string();
    let mut errors = Vec::new();
    loop {
        match GdParser::parse(Rule::file, &text) {
            Ok(mut pairs) if errors.is_empty() => {
                let file = pairs.next().expect("the file rule always yields one pair");
                return Ok(build_file(file));
            }
            Ok(_) => return Err(errors),
            Err(e) => {
                let pos = match e.location {
                    InputLocation::Pos(p) => p,
                    InputLocation::Span((s, _)) => s,
                };
                errors.push(syntax_diagnostic(&e.variant, pos, &text));
                if errors.len() >= MAX_SYNTAX_ERRORS || !blank_line_at(&mut text, pos) {
                    return Err(errors);
                }
            }
        }
    }
}

/// Replaces the line holding `pos` with spaces, unless that would unbalance braces or
/// parentheses (which would only cause spurious errors further down). Returns whether it did.
fn blank_line_at(text: &mut String, pos: usize) -> bool {
    let pos = pos.min(text.len());
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = &text[start..end];
    let balance = |open: char, close: char| {
        line.chars().filter(|&c| c == open).count() == line.chars().filter(|&c| c == close).count()
    };
    if line.trim().is_empty() || !balance('{', '}') || !balance('(', ')') || !balance('[', ']') {
        return false;
    }
    let blank: String = line.chars().map(|c| if c.is_whitespace() { c } else { ' ' }).collect();
    text.replace_range(start..end, &blank);
    true
}

fn rule_name(rule: &Rule) -> &'static str {
    match rule {
        Rule::ident => "a name",
        Rule::expr | Rule::number | Rule::boolean | Rule::call | Rule::paren => "an expression",
        Rule::optimizer => "`optimizer`",
        Rule::fn_def => "`fn`",
        Rule::hyper_decl => "`hyper`",
        Rule::state_decl => "`state`",
        Rule::global_decl => "`global`",
        Rule::prepare_block => "`prepare`",
        Rule::update_def => "`update`",
        Rule::block => "a block `{ ... }`",
        Rule::let_stmt | Rule::var_stmt | Rule::if_stmt | Rule::for_stmt | Rule::every_stmt => {
            "a statement"
        }
        Rule::return_stmt | Rule::assign_stmt => "a statement",
        Rule::assign_op => "`=`",
        Rule::scalar_ty | Rule::shape => "a type (`f32`, `int`, `bool`, `tensor` or `[dims]`)",
        Rule::param => "a parameter",
        Rule::hyper_range => "`in lo..=hi`",
        Rule::pattern => "a name or `(a, b)`",
        Rule::arg => "an argument",
        Rule::EOI => "the end of the file",
        Rule::transpose => "`.T`",
        Rule::or | Rule::and | Rule::eq | Rule::ne | Rule::le | Rule::ge | Rule::lt | Rule::gt => {
            "an operator"
        }
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::rem | Rule::matmul | Rule::pow => {
            "an operator"
        }
        Rule::neg | Rule::not => "an expression",
        _ => "something else",
    }
}

fn syntax_diagnostic(variant: &ErrorVariant<Rule>, pos: usize, text: &str) -> Diagnostic {
    let found: String = text[pos..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(16)
        .collect();
    let mut expected: Vec<&str> = match variant {
        ErrorVariant::ParsingError { positives, .. } => positives.iter().map(rule_name).collect(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    expected.sort();
    expected.dedup();
    let expected = match expected.len() {
        0 => "valid syntax".to_string(),
        1 => expected[0].to_string(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let found_text = if found.is_empty() { "the end of the file".to_string() } else { format!("`{found}`") };
    let end = pos + found.len().max(if pos < text.len() { 1 } else { 0 });
    let hint = if expected.contains("expression") {
        "an expression is a number, a name, a call like `sqrt(v)`, or operators between them"
    } else if found.is_empty() {
        "the file ended early: is a closing `}` missing?"
    } else if expected.contains("statement") || expected.contains("`hyper`") {
        "each line of a block is `let`, `var`, an assignment `x = ...`, `if`, `for`, `every` or `return`; an optimizer holds `hyper`, `state`, `global`, `prepare` and `update`"
    } else {
        "see docs/language.md for the syntax of each construct"
    };
    Diagnostic::error("E0001", format!("syntax error: expected {expected}, found {found_text}"), Span::new(pos, end))
        .label(format!("expected {expected} here"))
        .hint(hint)
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: pair.as_span().into() }
}

fn build_file(pair: Pair<Rule>) -> File {
    let mut file = File::default();
    for item in pair.into_inner() {
        match item.as_rule() {
            Rule::optimizer => file.optimizers.push(build_optimizer(item)),
            Rule::fn_def => file.fns.push(build_fn(item)),
            _ => {}
        }
    }
    file
}

fn build_optimizer(pair: Pair<Rule>) -> Optimizer {
    let span = pair.as_span().into();
    let mut inner = pair.into_inner();
    let name = ident(inner.next().expect("optimizer name"));
    let mut opt = Optimizer {
        name,
        hypers: Vec::new(),
        states: Vec::new(),
        globals: Vec::new(),
        prepares: Vec::new(),
        updates: Vec::new(),
        span,
    };
    for member in inner {
        let span: Span = member.as_span().into();
        match member.as_rule() {
            Rule::hyper_decl => {
                let mut it = member.into_inner().peekable();
                let name = ident(it.next().expect("hyper name"));
                let ty = it.next_if(|p| p.as_rule() == Rule::scalar_ty).map(|p| (scalar_ty(p.as_str()), p.as_span().into()));
                let default = build_expr(it.next().expect("hyper default"));
                let range = it.next().map(|r| {
                    let mut r = r.into_inner();
                    (build_expr(r.next().expect("lo")), build_expr(r.next().expect("hi")))
                });
                opt.hypers.push(HyperDecl { name, ty, default, range, span });
            }
            Rule::state_decl => {
                let mut it = member.into_inner().peekable();
                let name = ident(it.next().expect("state name"));
                let shape = it.next_if(|p| p.as_rule() == Rule::shape).map(build_shape);
                let init = it.next().map(build_expr);
                opt.states.push(StateDecl { name, shape, init, span });
            }
            Rule::global_decl => {
                let mut it = member.into_inner();
                let name = ident(it.next().expect("global name"));
                let init = build_expr(it.next().expect("global init"));
                opt.globals.push(GlobalDecl { name, init, span });
            }
            Rule::prepare_block => {
                opt.prepares.push(build_block(member.into_inner().next().expect("block")));
            }
            Rule::update_def => {
                let mut it = member.into_inner();
                let param = build_param(it.next().expect("p"));
                let grad = build_param(it.next().expect("g"));
                let body = build_block(it.next().expect("body"));
                opt.updates.push(UpdateDef { param, grad, body, span });
            }
            _ => {}
        }
    }
    opt
}

fn scalar_ty(s: &str) -> ScalarTy {
    match s {
        "int" => ScalarTy::Int,
        "bool" => ScalarTy::Bool,
        _ => ScalarTy::F32,
    }
}

fn build_shape(pair: Pair<Rule>) -> ShapeExpr {
    let span = pair.as_span().into();
    ShapeExpr { dims: pair.into_inner().map(ident).collect(), span }
}

fn build_type(pair: Pair<Rule>) -> TypeExpr {
    let span: Span = pair.as_span().into();
    match pair.as_rule() {
        Rule::shape => TypeExpr::Shape(build_shape(pair)),
        _ if pair.as_str() == "tensor" => TypeExpr::AnyTensor(span),
        _ => TypeExpr::Scalar(scalar_ty(pair.as_str()), span),
    }
}

fn build_param(pair: Pair<Rule>) -> Param {
    let span = pair.as_span().into();
    let mut it = pair.into_inner();
    let name = ident(it.next().expect("param name"));
    let ty = it.next().map(build_type);
    Param { name, ty, span }
}

fn build_fn(pair: Pair<Rule>) -> FnDef {
    let span = pair.as_span().into();
    let mut it = pair.into_inner();
    let name = ident(it.next().expect("fn name"));
    let mut params = Vec::new();
    let mut ret = None;
    let mut body = None;
    for p in it {
        match p.as_rule() {
            Rule::param => params.push(build_param(p)),
            Rule::block => body = Some(build_block(p)),
            _ => ret = Some(build_type(p)),
        }
    }
    FnDef { name, params, ret, body: body.expect("fn body"), span }
}

fn build_block(pair: Pair<Rule>) -> Block {
    let span = pair.as_span().into();
    Block { stmts: pair.into_inner().map(build_stmt).collect(), span }
}

fn build_stmt(pair: Pair<Rule>) -> Stmt {
    let span: Span = pair.as_span().into();
    let rule = pair.as_rule();
    let mut it = pair.into_inner();
    match rule {
        Rule::let_stmt => {
            let names = it.next().expect("pattern").into_inner().map(ident).collect();
            Stmt::Let { names, value: build_expr(it.next().expect("value")), span }
        }
        Rule::var_stmt => {
            let name = ident(it.next().expect("name"));
            Stmt::Var { name, value: build_expr(it.next().expect("value")), span }
        }
        Rule::assign_stmt => {
            let target = ident(it.next().expect("target"));
            let op = match it.next().expect("op").as_str() {
                "+=" => AssignOp::Add,
                "-=" => AssignOp::Sub,
                "*=" => AssignOp::Mul,
                "/=" => AssignOp::Div,
                _ => AssignOp::Set,
            };
            Stmt::Assign { target, op, value: build_expr(it.next().expect("value")), span }
        }
        Rule::if_stmt => {
            let cond = build_expr(it.next().expect("cond"));
            let then = build_block(it.next().expect("then"));
            let otherwise = it.next().map(|p| match p.as_rule() {
                Rule::if_stmt => {
                    let nested = build_stmt(p);
                    Block { span: nested.span(), stmts: vec![nested] }
                }
                _ => build_block(p),
            });
            Stmt::If { cond, then, otherwise, span }
        }
        Rule::for_stmt => {
            let var = ident(it.next().expect("var"));
            let start = build_expr(it.next().expect("start"));
            let end = build_expr(it.next().expect("end"));
            Stmt::For { var, start, end, body: build_block(it.next().expect("body")), span }
        }
        Rule::every_stmt => {
            let period = build_expr(it.next().expect("period"));
            Stmt::Every { period, body: build_block(it.next().expect("body")), span }
        }
        _ => Stmt::Return { value: build_expr(it.next().expect("value")), span },
    }
}

fn build_expr(pair: Pair<Rule>) -> Expr {
    PRATT
        .map_primary(build_primary)
        .map_prefix(|op, rhs| {
            let span = Span::from(op.as_span()).to(rhs.span);
            let op = if op.as_rule() == Rule::neg { UnOp::Neg } else { UnOp::Not };
            Expr { kind: ExprKind::Unary(op, Box::new(rhs)), span }
        })
        .map_postfix(|lhs, op| {
            let span = lhs.span.to(op.as_span().into());
            Expr { kind: ExprKind::Transpose(Box::new(lhs)), span }
        })
        .map_infix(|lhs, op, rhs| {
            let op = match op.as_rule() {
                Rule::or => BinOp::Or,
                Rule::and => BinOp::And,
                Rule::eq => BinOp::Eq,
                Rule::ne => BinOp::Ne,
                Rule::lt => BinOp::Lt,
                Rule::le => BinOp::Le,
                Rule::gt => BinOp::Gt,
                Rule::ge => BinOp::Ge,
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                Rule::rem => BinOp::Rem,
                Rule::matmul => BinOp::MatMul,
                _ => BinOp::Pow,
            };
            let span = lhs.span.to(rhs.span);
            Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span }
        })
        .parse(pair.into_inner())
}

fn build_primary(pair: Pair<Rule>) -> Expr {
    let span: Span = pair.as_span().into();
    let kind = match pair.as_rule() {
        // The grammar only admits digits, a dot and an exponent, which f64 always parses;
        // an overflowing literal becomes infinity, which the checker reports.
        Rule::number => ExprKind::Number(pair.as_str().parse().unwrap_or(f64::INFINITY)),
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::ident => ExprKind::Name(pair.as_str().to_string()),
        Rule::call => {
            let mut it = pair.into_inner();
            let name = ident(it.next().expect("callee"));
            let args = it
                .map(|arg| {
                    let mut parts: Vec<Pair<Rule>> = arg.into_inner().collect();
                    let value = build_expr(parts.pop().expect("arg value"));
                    Arg { name: parts.pop().map(ident), value }
                })
                .collect();
            ExprKind::Call(name, args)
        }
        Rule::paren => {
            let mut items: Vec<Expr> = pair.into_inner().map(build_expr).collect();
            if items.len() == 1 {
                return items.pop().expect("one item");
            }
            ExprKind::Tuple(items)
        }
        _ => return build_expr(pair),
    };
    Expr { kind, span }
}
