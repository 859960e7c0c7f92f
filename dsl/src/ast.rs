//! The abstract syntax tree of a `.gd` file, as written: names are not yet resolved and
//! nothing is typed. Every node carries the byte span it came from.

use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, Default)]
pub struct File {
    pub fns: Vec<FnDef>,
    pub optimizers: Vec<Optimizer>,
    /// `use "file.gd"`: the optimizers a policy routes to.
    pub uses: Vec<UseDecl>,
    pub policies: Vec<PolicyDecl>,
}

/// `use "muon.gd"`, its text inlined by the loader as `use "muon.gd" { ... }`.
#[derive(Clone, Debug)]
pub struct UseDecl {
    pub path: String,
    /// The used file's functions and optimizer (`None` until the loader inlines it).
    pub body: Option<File>,
    pub span: Span,
}

/// `policy NAME { ROUTE* }`.
#[derive(Clone, Debug)]
pub struct PolicyDecl {
    pub name: Ident,
    /// Transformations every parameter's gradient goes through, in order, before the
    /// optimizer its route picks (`part clip_by_global_norm`): one stage for every parameter,
    /// so a global reduction in it spans all of them.
    pub parts: Vec<PartDecl>,
    pub routes: Vec<RouteDecl>,
    pub span: Span,
}

/// `hidden | input [rows, cols] -> muon`: roles (`_`: any), an optional shape, the target.
#[derive(Clone, Debug)]
pub struct RouteDecl {
    pub roles: Vec<Ident>,
    pub shape: Option<ShapeExpr>,
    pub target: Ident,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Optimizer {
    pub name: Ident,
    pub hypers: Vec<HyperDecl>,
    pub states: Vec<StateDecl>,
    pub inputs: Vec<InputDecl>,
    pub globals: Vec<GlobalDecl>,
    /// `prepare { ... }` blocks, run once per step before any parameter is updated.
    pub prepares: Vec<Block>,
    pub updates: Vec<UpdateDef>,
    pub span: Span,
    /// A policy merged into one optimizer: the routed optimizers' names and the routes
    /// (empty otherwise).
    pub routed: Vec<String>,
    pub routes: Vec<RouteDecl>,
    /// `part adamw`, `part adam = scale_by_adam`: the optimizers its update calls.
    pub parts: Vec<PartDecl>,
    /// `optimizer lookahead(base) { ... }`: a wrapper's optimizer parameters.
    pub part_params: Vec<Ident>,
    /// `optimizer lookahead_adam = lookahead(adam)`: a wrapper given its optimizers (the
    /// optimizer has no members of its own).
    pub instance: Option<Instance>,
}

impl Optimizer {
    /// An optimizer of this name that declares nothing yet.
    pub fn new(name: Ident, span: Span) -> Optimizer {
        Optimizer {
            name,
            hypers: Vec::new(),
            states: Vec::new(),
            inputs: Vec::new(),
            globals: Vec::new(),
            prepares: Vec::new(),
            updates: Vec::new(),
            span,
            routed: Vec::new(),
            routes: Vec::new(),
            parts: Vec::new(),
            part_params: Vec::new(),
            instance: None,
        }
    }
}

/// `part NAME` or `part NAME = TARGET`.
#[derive(Clone, Debug)]
pub struct PartDecl {
    /// The name the update calls it by.
    pub name: Ident,
    /// The optimizer it is; `None` when it is `name` itself, whose names are kept.
    pub target: Option<Ident>,
    pub span: Span,
}

/// `lookahead(adam)`: a wrapper and the optimizers given for its parameters.
#[derive(Clone, Debug)]
pub struct Instance {
    pub wrapper: Ident,
    pub args: Vec<Ident>,
    pub span: Span,
}

/// The type a hyperparameter is declared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarTy {
    F32,
    Int,
    Bool,
}

#[derive(Clone, Debug)]
pub struct HyperDecl {
    /// `optional hyper max_norm = none`: may be unset (`none`), read only under
    /// `if present(max_norm)`.
    pub optional: bool,
    pub name: Ident,
    /// The declared type; `None` when it is taken from the default's literal.
    pub ty: Option<(ScalarTy, Span)>,
    pub default: Expr,
    /// `in lo..=hi`: the values the runtime accepts.
    pub range: Option<(Expr, Expr)>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct StateDecl {
    pub name: Ident,
    /// `state m: bf16 = zeros`: stored as bfloat16 (`true`), or as float32.
    pub bf16: bool,
    /// `None`: shaped like the parameter.
    pub shape: Option<ShapeExpr>,
    pub init: Option<Expr>,
    pub span: Span,
}

/// `input a: [batch, cols]` or `optional input h`: a per-parameter tensor handed over with a
/// step besides the gradient.
#[derive(Clone, Debug)]
pub struct InputDecl {
    pub name: Ident,
    /// `None`: shaped like the parameter.
    pub shape: Option<ShapeExpr>,
    /// May be absent on a step; read only under `if present(name)`.
    pub optional: bool,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct GlobalDecl {
    pub name: Ident,
    pub init: Expr,
    pub span: Span,
}

/// A shape written as `[a, b]`; `[]` is a scalar.
#[derive(Clone, Debug)]
pub struct ShapeExpr {
    pub dims: Vec<Ident>,
    /// Each `...` written in the brackets: how many named dimensions precede it, and its
    /// span. Only `update(p: [..., rows, cols], g)` accepts one (the checker says so).
    pub ellipses: Vec<(usize, Span)>,
    pub span: Span,
}

impl ShapeExpr {
    /// `[..., a, b]`: one `...`, written first.
    pub fn is_batched(&self) -> bool {
        matches!(self.ellipses.as_slice(), [(0, _)])
    }
}

/// The type of a function or update parameter.
#[derive(Clone, Debug)]
pub enum TypeExpr {
    Scalar(ScalarTy, Span),
    /// `tensor`: any shape.
    AnyTensor(Span),
    Shape(ShapeExpr),
}

impl TypeExpr {
    pub fn span(&self) -> Span {
        match self {
            TypeExpr::Scalar(_, s) | TypeExpr::AnyTensor(s) => *s,
            TypeExpr::Shape(s) => s.span,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct UpdateDef {
    pub param: Param,
    pub grad: Param,
    pub body: Block,
    pub span: Span,
    /// In a policy merged into one optimizer, which routed optimizer this update is (0
    /// otherwise).
    pub owner: usize,
}

#[derive(Clone, Debug)]
pub struct FnDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub ret: Option<TypeExpr>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignOp {
    Set,
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    Let {
        names: Vec<Ident>,
        value: Expr,
        span: Span,
    },
    Var {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Assign {
        target: Ident,
        op: AssignOp,
        value: Expr,
        span: Span,
    },
    If {
        cond: Expr,
        then: Block,
        otherwise: Option<Block>,
        span: Span,
    },
    For {
        var: Ident,
        start: Expr,
        end: Expr,
        body: Block,
        span: Span,
    },
    /// `every K { ... }`, `every K at P { ... }`: runs on steps P, P+K, P+2K, ... (P is 1
    /// when not written).
    Every {
        period: Expr,
        phase: Option<Expr>,
        body: Block,
        span: Span,
    },
    /// `with precision = bf16 { ... }`: a setting (`name`, only `precision` today) for every
    /// statement the block runs, including inside the functions it calls.
    With {
        name: Ident,
        value: Expr,
        body: Block,
        span: Span,
    },
    Return {
        value: Expr,
        span: Span,
    },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Let { span, .. }
            | Stmt::Var { span, .. }
            | Stmt::Assign { span, .. }
            | Stmt::If { span, .. }
            | Stmt::For { span, .. }
            | Stmt::Every { span, .. }
            | Stmt::With { span, .. }
            | Stmt::Return { span, .. } => *span,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    MatMul,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Pow => "^",
            BinOp::MatMul => "@",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug)]
pub struct Arg {
    /// `axis = 1` names its argument.
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Number(f64),
    Bool(bool),
    Name(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Transpose(Box<Expr>),
    Call(Ident, Vec<Arg>),
    /// `(a, b, c)`: only as the value of a destructuring `let`.
    Tuple(Vec<Expr>),
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// Calls `f` on `e` and every expression inside it, outermost first.
pub fn visit_expr(e: &Expr, f: &mut impl FnMut(&Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Number(_) | ExprKind::Bool(_) | ExprKind::Name(_) => {}
        ExprKind::Unary(_, a) | ExprKind::Transpose(a) => visit_expr(a, f),
        ExprKind::Binary(_, a, b) => {
            visit_expr(a, f);
            visit_expr(b, f);
        }
        ExprKind::Call(_, args) => args.iter().for_each(|a| visit_expr(&a.value, f)),
        ExprKind::Tuple(items) => items.iter().for_each(|x| visit_expr(x, f)),
    }
}

/// Calls `f` on every expression of a block, nested blocks' included, in source order.
pub fn visit_exprs(b: &Block, f: &mut impl FnMut(&Expr)) {
    for s in &b.stmts {
        match s {
            Stmt::Let { value, .. }
            | Stmt::Var { value, .. }
            | Stmt::Assign { value, .. }
            | Stmt::Return { value, .. } => visit_expr(value, f),
            Stmt::If { cond, then, otherwise, .. } => {
                visit_expr(cond, f);
                visit_exprs(then, f);
                if let Some(o) = otherwise {
                    visit_exprs(o, f);
                }
            }
            Stmt::For { start, end, body, .. } => {
                visit_expr(start, f);
                visit_expr(end, f);
                visit_exprs(body, f);
            }
            Stmt::Every { period, phase, body, .. } => {
                visit_expr(period, f);
                if let Some(p) = phase {
                    visit_expr(p, f);
                }
                visit_exprs(body, f);
            }
            Stmt::With { value, body, .. } => {
                visit_expr(value, f);
                visit_exprs(body, f);
            }
        }
    }
}
