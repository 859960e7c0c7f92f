//! The generated program as a small syntax tree: enough structure for the shrinker to drop
//! statements, members and functions and to replace expressions by their parts, and a
//! renderer to `.gd` text with every compound expression parenthesised (so no precedence
//! question ever arises between the generator and the parser).

use std::collections::BTreeSet;
use std::fmt::Write;

/// An expression. Names, literals and whole fixed snippets are atoms.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Atom(String),
    /// A prefix operator: `-` or `!`.
    Un(&'static str, Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    /// `name(args, ...)`, then `tail` (`, axis = 1`) before the closing parenthesis.
    Call(String, Vec<Expr>, &'static str),
    /// `e.T`.
    T(Box<Expr>),
}

impl Expr {
    pub fn atom(s: impl Into<String>) -> Expr {
        Expr::Atom(s.into())
    }

    pub fn bin(op: &'static str, a: Expr, b: Expr) -> Expr {
        Expr::Bin(op, Box::new(a), Box::new(b))
    }

    pub fn call(name: &str, args: Vec<Expr>) -> Expr {
        Expr::Call(name.to_string(), args, "")
    }

    pub fn render(&self, out: &mut String) {
        match self {
            Expr::Atom(s) => out.push_str(s),
            Expr::Un(op, a) => {
                out.push('(');
                out.push_str(op);
                a.render(out);
                out.push(')');
            }
            Expr::Bin(op, a, b) => {
                out.push('(');
                a.render(out);
                let _ = write!(out, " {op} ");
                b.render(out);
                out.push(')');
            }
            Expr::Call(name, args, tail) => {
                out.push_str(name);
                out.push('(');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    a.render(out);
                }
                out.push_str(tail);
                out.push(')');
            }
            Expr::T(a) => {
                a.render(out);
                out.push_str(".T");
            }
        }
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        self.render(&mut s);
        s
    }

    /// The direct sub-expressions.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Atom(_) => vec![],
            Expr::Un(_, a) | Expr::T(a) => vec![a],
            Expr::Bin(_, a, b) => vec![a, b],
            Expr::Call(_, args, _) => args.iter().collect(),
        }
    }

    fn children_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Expr::Atom(_) => vec![],
            Expr::Un(_, a) | Expr::T(a) => vec![a],
            Expr::Bin(_, a, b) => vec![a, b],
            Expr::Call(_, args, _) => args.iter_mut().collect(),
        }
    }

    /// The number of nodes.
    pub fn size(&self) -> usize {
        1 + self.children().iter().map(|c| c.size()).sum::<usize>()
    }

    /// The `n`th node in pre-order (counting down `n`).
    pub fn nth_mut(&mut self, n: &mut usize) -> Option<&mut Expr> {
        if *n == 0 {
            return Some(self);
        }
        *n -= 1;
        for c in self.children_mut() {
            if let Some(e) = c.nth_mut(n) {
                return Some(e);
            }
        }
        None
    }
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Let(String, Expr),
    LetTuple(Vec<String>, Vec<Expr>),
    Var(String, Expr),
    /// `target op value`, op one of `=`, `+=`, `-=`, `*=`, `/=`.
    Assign(String, &'static str, Expr),
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    /// `every K` or `every K at P`: K a literal or an int hyperparameter, P a literal.
    Every(String, Vec<Stmt>),
    /// `for VAR in LO..HI`: HI a literal or a ranged int hyperparameter.
    For(String, u32, String, Vec<Stmt>),
}

impl Stmt {
    fn render(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match self {
            Stmt::Let(n, e) => {
                let _ = writeln!(out, "{pad}let {n} = {}", e.text());
            }
            Stmt::LetTuple(ns, es) => {
                let es: Vec<String> = es.iter().map(Expr::text).collect();
                let _ = writeln!(out, "{pad}let ({}) = ({})", ns.join(", "), es.join(", "));
            }
            Stmt::Var(n, e) => {
                let _ = writeln!(out, "{pad}var {n} = {}", e.text());
            }
            Stmt::Assign(n, op, e) => {
                let _ = writeln!(out, "{pad}{n} {op} {}", e.text());
            }
            Stmt::If(c, a, b) => {
                let _ = writeln!(out, "{pad}if {} {{", c.text());
                render_block(a, out, indent + 2);
                if b.is_empty() {
                    let _ = writeln!(out, "{pad}}}");
                } else {
                    let _ = writeln!(out, "{pad}}} else {{");
                    render_block(b, out, indent + 2);
                    let _ = writeln!(out, "{pad}}}");
                }
            }
            Stmt::Every(k, body) => {
                let _ = writeln!(out, "{pad}every {k} {{");
                render_block(body, out, indent + 2);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::For(v, lo, hi, body) => {
                let _ = writeln!(out, "{pad}for {v} in {lo}..{hi} {{");
                render_block(body, out, indent + 2);
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }

    /// The expressions directly in this statement (not in nested blocks).
    pub fn exprs_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Stmt::Let(_, e) | Stmt::Var(_, e) | Stmt::Assign(_, _, e) | Stmt::If(e, _, _) => vec![e],
            Stmt::LetTuple(_, es) => es.iter_mut().collect(),
            Stmt::Every(..) | Stmt::For(..) => vec![],
        }
    }

    pub fn blocks_mut(&mut self) -> Vec<&mut Vec<Stmt>> {
        match self {
            Stmt::If(_, a, b) => vec![a, b],
            Stmt::Every(_, b) | Stmt::For(_, _, _, b) => vec![b],
            _ => vec![],
        }
    }
}

pub fn render_block(b: &[Stmt], out: &mut String, indent: usize) {
    for s in b {
        s.render(out, indent);
    }
}

/// A user function: its whole text is generated at once, except the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub name: String,
    /// `(name, type)` pairs as written.
    pub params: Vec<(String, String)>,
    pub ret: String,
    pub body: Vec<Stmt>,
    pub result: Expr,
}

/// The update's parameter pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Any,
    Vector,
    Matrix,
    Batched,
}

impl Kind {
    pub fn pattern(self) -> &'static str {
        match self {
            Kind::Any => "p, g",
            Kind::Vector => "p: [rows], g",
            Kind::Matrix => "p: [rows, cols], g",
            Kind::Batched => "p: [..., rows, cols], g",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub kind: Kind,
    pub body: Vec<Stmt>,
    /// `with precision = NAME { body }`: the products of the body in a precision
    /// hyperparameter's (which random hyperparameters set to f32, tf32 or bf16).
    pub precision: Option<String>,
}

/// A member declaration, written out whole (`hyper lr = 0.1`, `state m: [rows] = zeros`).
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub name: String,
    pub text: String,
}

/// A whole generated file.
#[derive(Clone, Debug, PartialEq)]
pub struct Prog {
    pub fns: Vec<Func>,
    pub hypers: Vec<Decl>,
    pub states: Vec<Decl>,
    pub globals: Vec<Decl>,
    pub prepare: Option<Vec<Stmt>>,
    pub updates: Vec<Update>,
    /// What the generator put in (for the run's feature counts; not rendered).
    pub features: BTreeSet<&'static str>,
}

impl Prog {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.fns {
            let ps: Vec<String> = f.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
            let _ = writeln!(out, "fn {}({}) -> {} {{", f.name, ps.join(", "), f.ret);
            render_block(&f.body, &mut out, 2);
            let _ = writeln!(out, "  return {}", f.result.text());
            let _ = writeln!(out, "}}\n");
        }
        out.push_str("optimizer random {\n");
        for d in self.hypers.iter().chain(&self.states).chain(&self.globals) {
            let _ = writeln!(out, "  {}", d.text);
        }
        if let Some(b) = &self.prepare {
            out.push_str("\n  prepare {\n");
            render_block(b, &mut out, 4);
            out.push_str("  }\n");
        }
        for u in &self.updates {
            let _ = writeln!(out, "\n  update({}) {{", u.kind.pattern());
            match &u.precision {
                Some(p) => {
                    let _ = writeln!(out, "    with precision = {p} {{");
                    render_block(&u.body, &mut out, 6);
                    out.push_str("    }\n");
                }
                None => render_block(&u.body, &mut out, 4),
            }
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        out
    }

    /// Every statement block of the program, functions, prepare and updates.
    pub fn blocks_mut(&mut self) -> Vec<&mut Vec<Stmt>> {
        let mut out = Vec::new();
        for f in &mut self.fns {
            out.push(&mut f.body);
        }
        if let Some(b) = &mut self.prepare {
            out.push(b);
        }
        for u in &mut self.updates {
            out.push(&mut u.body);
        }
        out
    }

    /// Every top-level expression slot (statement expressions, nested blocks included, and
    /// function results).
    pub fn expr_roots_mut(&mut self) -> Vec<&mut Expr> {
        fn walk<'a>(b: &'a mut [Stmt], out: &mut Vec<&'a mut Expr>) {
            for s in b.iter_mut() {
                match s {
                    Stmt::Let(_, e) | Stmt::Var(_, e) | Stmt::Assign(_, _, e) => out.push(e),
                    Stmt::LetTuple(_, es) => out.extend(es.iter_mut()),
                    Stmt::If(c, a, e) => {
                        out.push(c);
                        walk(a, out);
                        walk(e, out);
                    }
                    Stmt::Every(_, body) | Stmt::For(_, _, _, body) => walk(body, out),
                }
            }
        }
        let mut out = Vec::new();
        for f in &mut self.fns {
            walk(&mut f.body, &mut out);
            out.push(&mut f.result);
        }
        if let Some(b) = &mut self.prepare {
            walk(b, &mut out);
        }
        for u in &mut self.updates {
            walk(&mut u.body, &mut out);
        }
        out
    }
}
