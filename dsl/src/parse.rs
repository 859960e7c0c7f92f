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

/// The largest source text the parser takes, in bytes (1 MiB): the example optimizers are
/// a few kilobytes, and a limit keeps a wrong file (a checkpoint, a log) from costing
/// minutes and gigabytes before it is refused.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Reads a `.gd` file, at most [`MAX_SOURCE_BYTES`] + 1 bytes of it: a longer file is not
/// read whole, and its first bytes parse to the diagnostic that says it is too long.
pub fn read_source(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_SOURCE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_SOURCE_BYTES {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Parses a whole file. On syntax errors the AST is empty and every error found is returned.
pub fn parse(source: &str) -> Result<File, Vec<Diagnostic>> {
    if source.len() > MAX_SOURCE_BYTES {
        let first_line = source.find('\n').unwrap_or(source.len()).min(80);
        let first_line = (0..=first_line).rev().find(|i| source.is_char_boundary(*i)).unwrap_or(0);
        return Err(vec![Diagnostic::error(
            "E0001",
            format!("this file is longer than {MAX_SOURCE_BYTES} bytes, the most a `.gd` file may have"),
            Span::new(0, first_line),
        )
        .label("the file that starts here is too long")
        .hint("an optimizer is a few hundred lines: is this the file you meant? (split generated code into `fn`s)")]);
    }
    // Track the literal tokens tried at the furthest position, not just the rules: a
    // missing `=` or `}` is reported where it is missing. (A process-wide pest setting.)
    pest::set_error_detail(true);
    let mut text = source.to_string();
    let mut errors = Vec::new();
    loop {
        match GdParser::parse(Rule::file, &text) {
            Ok(mut pairs) if errors.is_empty() => {
                let file = pairs.next().expect("the file rule always yields one pair");
                if let Some(deep) = too_deep(&file, MAX_NESTING) {
                    return Err(vec![Diagnostic::error("E0001", "this is nested too deeply", span_of(&deep))
                        .label(format!("more than {MAX_NESTING} levels of nesting"))
                        .hint("split long expressions and deep nesting into several `let` bindings")]);
                }
                return Ok(build_file(file));
            }
            Ok(_) => return Err(errors),
            Err(e) => {
                let d = syntax_diagnostic(&e, &text);
                let pos = d.span.start as usize;
                errors.push(d);
                if errors.len() >= MAX_SYNTAX_ERRORS || !blank_line_at(&mut text, pos) {
                    return Err(errors);
                }
            }
        }
    }
}

/// How deeply expressions and blocks may nest. The AST is walked recursively (here, in the
/// checker and in the lowering), so a limit keeps absurd input from overflowing the stack.
const MAX_NESTING: usize = 1000;

/// Finds where the nesting of `pair` exceeds `budget`. Each pair costs one level, and an
/// expression also costs one per operand and operator, which bounds the depth of the tree
/// the operator-precedence parser builds from it. The recursion is bounded by the budget.
fn too_deep<'i>(pair: &Pair<'i, Rule>, budget: usize) -> Option<Pair<'i, Rule>> {
    let weight =
        1 + if pair.as_rule() == Rule::expr { pair.clone().into_inner().filter(not_keyword).count() } else { 0 };
    if weight > budget {
        return Some(pair.clone());
    }
    pair.clone().into_inner().filter(not_keyword).find_map(|child| too_deep(&child, budget - weight))
}

/// The span of a pair without the whitespace and comments pest includes at its end when the
/// rule ends in an optional or repeated part that matched nothing (`expr`, `param`, ...).
fn span_of(pair: &Pair<Rule>) -> Span {
    let start = pair.as_span().start();
    let mut cur = pair.clone();
    loop {
        let end = cur.as_span().end();
        let Some(last) = cur.clone().into_inner().filter(not_keyword).last() else { return Span::new(start, end) };
        let tail = &cur.as_str()[last.as_span().end() - cur.as_span().start()..];
        if !is_trivia(tail) {
            return Span::new(start, end);
        }
        cur = last;
    }
}

/// True when `s` holds only whitespace and `//` comments.
fn is_trivia(mut s: &str) -> bool {
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return true;
        }
        match s.strip_prefix("//") {
            Some(rest) => s = rest.find('\n').map_or("", |i| &rest[i..]),
            None => return false,
        }
    }
}

/// Replaces the line holding `pos` with spaces, unless that would unbalance braces or
/// parentheses (which would only cause spurious errors further down). Returns whether it did.
/// Every byte becomes a space, so the byte positions of later errors stay those of `source`.
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
    let blank: String =
        line.chars().map(|c| if c.is_whitespace() { c.to_string() } else { " ".repeat(c.len_utf8()) }).collect();
    text.replace_range(start..end, &blank);
    true
}

fn rule_name(rule: &Rule) -> &'static str {
    match rule {
        Rule::ident => "a name",
        Rule::ellipsis => "`...`",
        Rule::expr | Rule::number | Rule::boolean | Rule::call | Rule::paren => "an expression",
        Rule::optimizer | Rule::kw_optimizer => "`optimizer`",
        Rule::fn_def | Rule::kw_fn => "`fn`",
        Rule::hyper_decl | Rule::kw_hyper => "`hyper`",
        Rule::state_decl | Rule::kw_state => "`state`",
        Rule::global_decl | Rule::kw_global => "`global`",
        Rule::input_decl | Rule::kw_input | Rule::kw_optional => "`input`",
        Rule::part_decl | Rule::kw_part => "`part`",
        Rule::prepare_block | Rule::kw_prepare => "`prepare`",
        Rule::update_def | Rule::kw_update => "`update`",
        Rule::kw_let | Rule::kw_var | Rule::kw_if | Rule::kw_for | Rule::kw_every | Rule::kw_with | Rule::kw_return => {
            "a statement"
        }
        Rule::kw_else => "`else`",
        Rule::kw_in => "`in`",
        Rule::kw_at => "`at`",
        Rule::block => "a block `{ ... }`",
        Rule::let_stmt | Rule::var_stmt | Rule::if_stmt | Rule::for_stmt | Rule::every_stmt | Rule::with_stmt => {
            "a statement"
        }
        Rule::return_stmt | Rule::assign_stmt => "a statement",
        Rule::assign_op => "`=`",
        Rule::scalar_ty | Rule::shape => "a type (`f32`, `int`, `bool`, `tensor` or `[dims]`)",
        Rule::hyper_ty => "`f32`, `int` or `bool`",
        Rule::param => "a parameter",
        Rule::hyper_range => "`in lo..=hi`",
        Rule::pattern => "a name or `(a, b)`",
        Rule::arg => "an argument",
        Rule::EOI => "the end of the file",
        Rule::transpose => "`.T`",
        Rule::or | Rule::and | Rule::eq | Rule::ne | Rule::le | Rule::ge | Rule::lt | Rule::gt => "an operator",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::rem | Rule::matmul | Rule::pow => "an operator",
        Rule::neg | Rule::not => "an expression",
        _ => "something else",
    }
}

/// Punctuation worth naming when it is what the parser expected.
const PUNCTUATION: &[&str] = &["=", ":", ",", "(", ")", "{", "}", "[", "]", "->", "..", "..="];

/// Where pest last expected a punctuation token, and which ones, when that is further into
/// the input than any rule it tried (pest's own error position only counts rules, so
/// `let x: f32 = 1` would be reported at `let` rather than at `:`).
fn furthest_punctuation(e: &pest::error::Error<Rule>) -> Option<(usize, Vec<String>)> {
    let attempts = e.parse_attempts()?;
    let mut tokens: Vec<String> = attempts
        .expected_tokens()
        .iter()
        .map(|t| t.to_string())
        .filter(|t| PUNCTUATION.contains(&t.as_str()))
        .collect();
    tokens.sort();
    tokens.dedup();
    (!tokens.is_empty()).then_some((attempts.max_position, tokens))
}

fn syntax_diagnostic(e: &pest::error::Error<Rule>, text: &str) -> Diagnostic {
    let rule_pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let positives = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.as_slice(),
        // pest reports its own limits (its stack guard) as custom errors.
        ErrorVariant::CustomError { message } => {
            let end = rule_pos + usize::from(rule_pos < text.len());
            return Diagnostic::error("E0001", format!("the parser gave up here: {message}"), Span::new(rule_pos, end))
                .label("too deeply nested")
                .hint("split deep nesting into several `let` bindings");
        }
    };
    // Punctuation tried at or beyond the rules' position is the better guess.
    let (mut pos, punctuation) = match furthest_punctuation(e) {
        Some((p, tokens)) if p >= rule_pos => (p, tokens),
        _ => (rule_pos, Vec::new()),
    };
    let quoted: Vec<String> = punctuation.iter().map(|t| format!("`{t}`")).collect();
    let mut expected: Vec<&str> = quoted.iter().map(String::as_str).collect();
    if pos == rule_pos {
        expected.extend(positives.iter().map(|r| -> &str { rule_name(r) }));
    }
    expected.sort();
    expected.dedup();
    // After a complete expression, an operator or `.T` could always follow; when
    // punctuation, a new statement or a member could come instead, those only add noise.
    if !quoted.is_empty() || expected.iter().any(|e| STRUCTURAL.contains(e)) {
        expected.retain(|e| !matches!(*e, "an operator" | "`.T`" | "`in lo..=hi`" | "`in`" | "`else`"));
    }
    // A name is an expression, and starts an assignment: say the more general thing once.
    if expected.contains(&"an expression") || expected.contains(&"a statement") {
        expected.retain(|e| *e != "a name");
    }
    // `(` opens an expression, or a call's arguments after a complete name.
    if expected.contains(&"an expression") || expected.contains(&"a statement") {
        expected.retain(|e| *e != "`(`");
    }
    let has = |what: &str| expected.contains(&what);
    // A closing bracket missing at the end of a line is only noticed on the next one:
    // point at the end of the line where it is missing.
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let mut at_line_end = false;
    if (has("`)`") || has("`]`")) && line_start > 0 && text[line_start..pos].trim().is_empty() {
        let previous = text[..line_start - 1].trim_end();
        let previous_line = &previous[previous.rfind('\n').map_or(0, |i| i + 1)..];
        if !previous.is_empty() && !previous_line.contains("//") {
            pos = previous.len();
            at_line_end = true;
        }
    }
    let found: String = text[pos..].chars().take_while(|c| !c.is_whitespace()).take(16).collect();
    let end = pos + found.len().max(usize::from(pos < text.len() && !at_line_end));
    let found_text = if at_line_end {
        "the end of the line".to_string()
    } else if found.is_empty() {
        "the end of the file".to_string()
    } else {
        format!("`{found}`")
    };
    let foreign = found.chars().next().filter(|c| !c.is_ascii());
    let owned_hint;
    let hint = if let Some(c) = foreign {
        owned_hint = format!(
            "`{c}` is not part of the language, whose operators are ASCII: `+ - * / % ^ @ == != < <= > >= && || !`"
        );
        owned_hint.as_str()
    } else if has("`)`") || has("`]`") {
        "is a closing bracket missing, or a `,` between arguments?"
    } else if has("an expression") && found.starts_with('=') && text[..pos].ends_with("..") {
        "a `for` range is `a..b`, which excludes b; `..=` only appears in hyperparameter ranges"
    } else if has("an expression") {
        "an expression is a number, a name, a call like `sqrt(v)`, or operators between them"
    } else if found.is_empty() {
        "the file ended early: is a closing `}` missing?"
    } else if has("`hyper`") {
        "an optimizer holds `hyper`, `state`, `input`, `global`, `part`, `prepare { ... }` and `update(p, g) { ... }`; statements such as `let` go inside `prepare` or `update`"
    } else if has("a statement") {
        "each line of a block is `let`, `var`, an assignment `x = ...`, `if`, `for`, `every` or `return`"
    } else if has("`=`") && found.starts_with(':') {
        "`let` and `var` take no type: it comes from the value"
    } else if has("`=`") {
        "a statement that starts with a name assigns to it: `x = ...`, `x += ...`; is an operator missing?"
    } else if has("`optimizer`") {
        "a file holds `fn` definitions and one `optimizer NAME { ... }`"
    } else if has("`f32`, `int` or `bool`") {
        "a hyperparameter is a scalar: `f32`, `int` or `bool`; per-parameter tensors are `state`"
    } else if has("a name") {
        "a name starts with a letter or `_`; keywords such as `let`, `in` or `state` cannot be names"
    } else {
        "see docs/language.md for the syntax of each construct"
    };
    let expected = match expected.len() {
        0 => "valid syntax".to_string(),
        1 => expected[0].to_string(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    Diagnostic::error("E0001", format!("syntax error: expected {expected}, found {found_text}"), Span::new(pos, end))
        .label(format!("expected {expected} here"))
        .hint(hint)
}

/// Expected items that start a statement, a member or an item.
const STRUCTURAL: &[&str] =
    &["a statement", "`hyper`", "`state`", "`global`", "`prepare`", "`update`", "`fn`", "`optimizer`"];

/// Keyword tokens are rules of their own (so `variance` is not `var iance`); the AST
/// builder skips them.
fn not_keyword(pair: &Pair<Rule>) -> bool {
    !matches!(
        pair.as_rule(),
        Rule::kw_optimizer
            | Rule::kw_hyper
            | Rule::kw_state
            | Rule::kw_global
            | Rule::kw_input
            | Rule::kw_prepare
            | Rule::kw_update
            | Rule::kw_fn
            | Rule::kw_let
            | Rule::kw_var
            | Rule::kw_if
            | Rule::kw_else
            | Rule::kw_for
            | Rule::kw_in
            | Rule::kw_every
            | Rule::kw_with
            | Rule::kw_return
            | Rule::kw_use
            | Rule::kw_policy
            | Rule::kw_part
    )
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: span_of(&pair) }
}

fn build_file(pair: Pair<Rule>) -> File {
    let mut file = File::default();
    for item in pair.into_inner().filter(not_keyword) {
        match item.as_rule() {
            Rule::optimizer => file.optimizers.push(build_optimizer(item)),
            Rule::fn_def => file.fns.push(build_fn(item)),
            Rule::use_decl => {
                let span = span_of(&item);
                let mut it = item.into_inner().filter(not_keyword);
                let path = it.next().map(|p| p.as_str().trim_matches('"').to_string()).unwrap_or_default();
                let body = it.next().map(build_file);
                file.uses.push(UseDecl { path, body, span });
            }
            Rule::policy => {
                let span = span_of(&item);
                let mut it = item.into_inner().filter(not_keyword);
                let name = ident(it.next().expect("a policy's name"));
                let mut it = it.peekable();
                let mut parts = Vec::new();
                while let Some(p) = it.next_if(|p| p.as_rule() == Rule::part_decl) {
                    let span = span_of(&p);
                    let mut names = p.into_inner().filter(not_keyword).map(ident);
                    let name = names.next().expect("a part's name");
                    parts.push(PartDecl { name, target: names.next(), span });
                }
                let routes = it
                    .map(|r| {
                        let span = span_of(&r);
                        let mut roles = Vec::new();
                        let mut shape = None;
                        let mut last = None;
                        for part in r.into_inner() {
                            match part.as_rule() {
                                Rule::shape => shape = Some(build_shape(part)),
                                Rule::ident => {
                                    if let Some(prev) = last.replace(ident(part)) {
                                        roles.push(prev);
                                    }
                                }
                                _ => {}
                            }
                        }
                        RouteDecl { roles, shape, target: last.expect("a route's target"), span }
                    })
                    .collect();
                file.policies.push(PolicyDecl { name, parts, routes, span });
            }
            _ => {}
        }
    }
    file
}

fn build_optimizer(pair: Pair<Rule>) -> Optimizer {
    let span = span_of(&pair);
    let mut inner = pair.into_inner().filter(not_keyword);
    let name = ident(inner.next().expect("optimizer name"));
    let mut opt = Optimizer::new(name, span);
    for member in inner {
        let span: Span = span_of(&member);
        match member.as_rule() {
            Rule::opt_params => opt.part_params = member.into_inner().map(ident).collect(),
            Rule::instance => {
                let mut it = member.into_inner().map(ident);
                let wrapper = it.next().expect("a wrapper's name");
                opt.instance = Some(Instance { wrapper, args: it.collect(), span });
            }
            Rule::part_decl => {
                let mut it = member.into_inner().filter(not_keyword).map(ident);
                let name = it.next().expect("a part's name");
                opt.parts.push(PartDecl { name, target: it.next(), span });
            }
            Rule::hyper_decl => {
                let mut it = member.into_inner().filter(not_keyword).peekable();
                let optional = it.next_if(|p| p.as_rule() == Rule::kw_optional).is_some();
                let name = ident(it.next().expect("hyper name"));
                let ty = it.next_if(|p| p.as_rule() == Rule::hyper_ty).map(|p| (scalar_ty(p.as_str()), span_of(&p)));
                let default = build_expr(it.next().expect("hyper default"));
                let range = it.next().map(|r| {
                    let mut r = r.into_inner().filter(not_keyword);
                    (build_expr(r.next().expect("lo")), build_expr(r.next().expect("hi")))
                });
                opt.hypers.push(HyperDecl { optional, name, ty, default, range, span });
            }
            Rule::state_decl => {
                let mut it = member.into_inner().filter(not_keyword).peekable();
                let name = ident(it.next().expect("state name"));
                let bf16 = it.next_if(|p| p.as_rule() == Rule::storage).is_some_and(|p| p.as_str() == "bf16");
                let shape = it.next_if(|p| p.as_rule() == Rule::shape).map(build_shape);
                let init = it.next().map(build_expr);
                opt.states.push(StateDecl { name, bf16, shape, init, span });
            }
            Rule::input_decl => {
                let mut it = member.into_inner().filter(not_keyword).peekable();
                let optional = it.next_if(|p| p.as_rule() == Rule::kw_optional).is_some();
                let name = ident(it.next().expect("input name"));
                let shape = it.next().map(build_shape);
                opt.inputs.push(InputDecl { name, shape, optional, span });
            }
            Rule::global_decl => {
                let mut it = member.into_inner().filter(not_keyword);
                let name = ident(it.next().expect("global name"));
                let init = build_expr(it.next().expect("global init"));
                opt.globals.push(GlobalDecl { name, init, span });
            }
            Rule::prepare_block => {
                opt.prepares.push(build_block(member.into_inner().find(not_keyword).expect("block")));
            }
            Rule::update_def => {
                let mut it = member.into_inner().filter(not_keyword);
                let param = build_param(it.next().expect("p"));
                let grad = build_param(it.next().expect("g"));
                let body = build_block(it.next().expect("body"));
                opt.updates.push(UpdateDef { param, grad, body, span, owner: 0 });
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
    let span = span_of(&pair);
    let mut dims = Vec::new();
    let mut ellipses = Vec::new();
    for p in pair.into_inner().filter(not_keyword) {
        if p.as_rule() == Rule::ellipsis {
            ellipses.push((dims.len(), span_of(&p)));
        } else {
            dims.push(ident(p));
        }
    }
    ShapeExpr { dims, ellipses, span }
}

fn build_type(pair: Pair<Rule>) -> TypeExpr {
    let span: Span = span_of(&pair);
    match pair.as_rule() {
        Rule::shape => TypeExpr::Shape(build_shape(pair)),
        _ if pair.as_str() == "tensor" => TypeExpr::AnyTensor(span),
        _ => TypeExpr::Scalar(scalar_ty(pair.as_str()), span),
    }
}

fn build_param(pair: Pair<Rule>) -> Param {
    let span = span_of(&pair);
    let mut it = pair.into_inner().filter(not_keyword);
    let name = ident(it.next().expect("param name"));
    let ty = it.next().map(build_type);
    Param { name, ty, span }
}

fn build_fn(pair: Pair<Rule>) -> FnDef {
    let span = span_of(&pair);
    let mut it = pair.into_inner().filter(not_keyword);
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
    let span = span_of(&pair);
    Block { stmts: pair.into_inner().filter(not_keyword).map(build_stmt).collect(), span }
}

fn build_stmt(pair: Pair<Rule>) -> Stmt {
    let span: Span = span_of(&pair);
    let rule = pair.as_rule();
    let mut it = pair.into_inner().filter(not_keyword);
    match rule {
        Rule::let_stmt => {
            let names = it.next().expect("pattern").into_inner().filter(not_keyword).map(ident).collect();
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
            let mut next = it.next().expect("body");
            let phase = if next.as_rule() == Rule::kw_at {
                let phase = build_expr(it.next().expect("phase"));
                next = it.next().expect("body");
                Some(phase)
            } else {
                None
            };
            Stmt::Every { period, phase, body: build_block(next), span }
        }
        Rule::with_stmt => {
            let name = ident(it.next().expect("setting"));
            let value = build_expr(it.next().expect("value"));
            Stmt::With { name, value, body: build_block(it.next().expect("body")), span }
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
    let span: Span = span_of(&pair);
    let kind = match pair.as_rule() {
        // The grammar only admits digits, a dot and an exponent, which f64 always parses;
        // an overflowing literal becomes infinity, which the checker reports.
        Rule::number => ExprKind::Number(pair.as_str().parse().unwrap_or(f64::INFINITY)),
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::ident => ExprKind::Name(pair.as_str().to_string()),
        Rule::call => {
            let mut it = pair.into_inner().filter(not_keyword);
            let name = ident(it.next().expect("callee"));
            let args = it
                .map(|arg| {
                    let mut parts: Vec<Pair<Rule>> = arg.into_inner().filter(not_keyword).collect();
                    let value = build_expr(parts.pop().expect("arg value"));
                    Arg { name: parts.pop().map(ident), value }
                })
                .collect();
            ExprKind::Call(name, args)
        }
        Rule::paren => {
            let mut items: Vec<Expr> = pair.into_inner().filter(not_keyword).map(build_expr).collect();
            if items.len() == 1 {
                return items.pop().expect("one item");
            }
            ExprKind::Tuple(items)
        }
        _ => return build_expr(pair),
    };
    Expr { kind, span }
}
