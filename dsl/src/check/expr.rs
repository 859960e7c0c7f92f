//! Checking expressions: names, operators, built-in and user function calls. Each returns
//! the expression's type, or `None` after reporting an error.

use super::{Checker, Ctx, Entity};
use crate::ast::{Arg, BinOp, Expr, ExprKind, FnDef, UnOp};
use crate::builtins::{self, Kind};
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use crate::types::{self, Elem, Shape, ShapeError, Ty};
use std::collections::HashMap;

impl Checker<'_> {
    pub(crate) fn check_expr(&mut self, e: &Expr) -> Option<Ty> {
        match &e.kind {
            ExprKind::Number(v) => {
                if !super::items::fits_f32(*v) {
                    self.error(
                        Diagnostic::error("E0019", "this number does not fit in f32", e.span)
                            .label("too large")
                            .hint("write a smaller literal; f32 holds values up to about 3.4e38"),
                    );
                    return None;
                }
                Some(Ty::NUM)
            }
            ExprKind::Bool(_) => Some(Ty::BOOL),
            ExprKind::Name(name) => self.check_name(name, e.span),
            ExprKind::Unary(op, inner) => {
                let ty = self.check_expr(inner)?;
                let want = if *op == UnOp::Neg { Elem::Num } else { Elem::Bool };
                if ty.elem != want {
                    let (sym, what) = if *op == UnOp::Neg { ("-", "a number") } else { ("!", "a bool") };
                    self.error(
                        Diagnostic::error("E0014", format!("`{sym}` needs {what}, found {ty}"), inner.span)
                            .label(format!("this is {ty}"))
                            .hint(if *op == UnOp::Neg {
                                "negate numbers; for a bool use `!`"
                            } else {
                                "negate bools; for a number use `-`"
                            }),
                    );
                    return None;
                }
                Some(ty)
            }
            ExprKind::Binary(op, a, b) => {
                // A direct operand of `@` (`a`, `a.T`) may carry an input's own dimension.
                let direct = |x: &Expr| match &x.kind {
                    ExprKind::Name(_) => true,
                    ExprKind::Transpose(inner) => matches!(inner.kind, ExprKind::Name(_)),
                    _ => false,
                };
                let matmul = *op == BinOp::MatMul;
                self.contracting = matmul && direct(a);
                let ta = self.check_expr(a);
                self.contracting = matmul && direct(b);
                let tb = self.check_expr(b);
                self.contracting = false;
                let ty = self.check_binary(*op, ta?, tb?, a.span, b.span, e.span)?;
                if let Some(d) = self.input_dim_of(&ty.shape) {
                    self.error(
                        Diagnostic::error("E0028", format!("this product keeps the input dimension `{d}`"), e.span)
                            .label(format!("shape {}", ty.shape))
                            .hint(format!("an input's own dimension must be summed out by the product: `a.T @ a` contracts `{d}`, `a @ x` does not")),
                    );
                    return None;
                }
                Some(ty)
            }
            ExprKind::Transpose(inner) => {
                let ty = self.check_expr(inner)?;
                match types::transpose(&ty.shape) {
                    Ok(shape) => Some(Ty { elem: ty.elem, shape }),
                    Err(err) => {
                        self.shape_error(err, e.span);
                        None
                    }
                }
            }
            ExprKind::Call(name, args) => self.check_call(&name.name, name.span, args, e.span),
            ExprKind::Tuple(_) => {
                self.error(
                    Diagnostic::error("E0022", "a tuple can only be unpacked by `let (a, b) = (x, y)`", e.span)
                        .label("tuple used as a value")
                        .hint("bind each element with `let (a, b, c) = (x, y, z)`"),
                );
                None
            }
        }
    }

    /// Reports a shape error at `span`, as a mismatch (E0005) or as a matrix operation on a
    /// value without named dimensions (E0009).
    pub(crate) fn shape_error(&mut self, err: ShapeError, span: Span) {
        let d = match err {
            ShapeError::PerAxis(msg) => {
                Diagnostic::error("E0005", format!("shape mismatch: {msg}"), span)
                    .label("shapes do not agree")
                    .hint("`axis_min(acc)` gives each element of the parameter the smallest of its indices' entries; `axis_max(x)` gives each entry the largest element at its index")
            }
            ShapeError::Mismatch(msg) => Diagnostic::error("E0005", format!("shape mismatch: {msg}"), span)
                .label("shapes do not agree")
                .hint("shapes are named: `[rows]` repeats along columns of `[rows, cols]`; use `.T` or a reduction with `axis =` to line them up"),
            ShapeError::NeedsMatrix(what) => Diagnostic::error(
                "E0009",
                match self.ctx {
                    Ctx::Fn => format!("{what} needs a matrix, but this value is a `tensor` of any shape"),
                    _ => format!("{what} needs a matrix, but this value is shaped like a parameter of any rank"),
                },
                span,
            )
            .label("no rows and columns here")
            .hint(match self.ctx {
                Ctx::Fn => "declare the function's parameter as a matrix: `x: [r, c]`",
                _ => "write the update as `update(p: [rows, cols], g)` so it applies to matrices",
            }),
        };
        self.error(d);
    }

    fn check_name(&mut self, name: &str, span: Span) -> Option<Ty> {
        if self.ctx == Ctx::Constant {
            self.error(
                Diagnostic::error("E0019", format!("`{name}` is not a literal"), span)
                    .label("a name in a constant")
                    .hint("defaults, ranges and global initial values are literals such as `0.9`, `-1`, `true`"),
            );
            return None;
        }
        if self.ctx == Ctx::Init && builtins::INIT_NAMES.contains(&name) {
            let shape = self.init_shape.clone().unwrap_or(Shape::Like);
            if name == "eye" && !matches!(shape.rank2(), Some((a, b)) if a == b) {
                self.error(
                    Diagnostic::error("E0020", format!("`eye` needs a square state shape, not {shape}"), span)
                        .label("not square")
                        .hint("declare the state as `[rows, rows]` or `[cols, cols]`"),
                );
                return None;
            }
            return Some(Ty::num(shape));
        }
        let Some(entry) = self.lookup(name) else {
            if let Some(d) = self.unavailable(name, span) {
                self.error(d);
                return None;
            }
            let hint = if builtins::INIT_NAMES.contains(&name) {
                format!("`{name}` is a state initialiser; in code write `0 * x` for zeros or `eye(m)` for an identity")
            } else if builtins::function(name).is_some() {
                format!("`{name}` is a function: call it as `{name}(...)`")
            } else if self.ctx == Ctx::Fn && self.is_optimizer_name(name) {
                format!("a function sees only its parameters: pass `{name}` as an argument")
            } else {
                match self.similar_name(name, false) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "declare it with `let`, `var`, `hyper` or `state` first".to_string(),
                }
            };
            self.error(
                Diagnostic::error("E0002", format!("unknown name `{name}`"), span).label("not defined here").hint(hint),
            );
            return None;
        };
        let update_dims = match self.ctx {
            Ctx::Update { dims } => dims,
            _ => 0,
        };
        let in_update = matches!(self.ctx, Ctx::Update { .. });
        match &entry.entity {
            Entity::PrecisionHyper => {
                self.error(
                    Diagnostic::error("E0014", format!("`{name}` is a precision, not a number"), span)
                        .label("a precision")
                        .note(entry.span, "declared here")
                        .hint(format!("a precision sets matrix products: `with precision = {name} {{ ... }}`")),
                );
                return None;
            }
            Entity::Input { .. } | Entity::InputDim if !in_update => {
                let what = if entry.entity == Entity::InputDim { "the input dimension" } else { "the input" };
                self.error(
                    Diagnostic::error("E0023", format!("{what} `{name}` cannot be used here"), span)
                        .label(self.outside_update())
                        .note(entry.span, "declared here")
                        .hint("inputs come with each parameter's step: read them in `update` (pass them to a function as arguments)"),
                );
                return None;
            }
            Entity::Hyper { optional: true, .. } if !self.present.iter().any(|p| p == name) => {
                self.error(
                    Diagnostic::error("E0027", format!("optional hyperparameter `{name}` may be unset here"), span)
                        .label("read where no `present` test holds")
                        .note(entry.span, "declared `optional`")
                        .hint(format!("read it inside `if present({name}) {{ ... }}`: while `{name}` is unset, that block is skipped")),
                );
                return None;
            }
            Entity::Input { optional } => {
                let shape = entry.ty.as_ref().map(|t| t.shape.clone()).unwrap_or(Shape::Like);
                if !super::shape_available(update_dims, &shape, &self.input_dims) {
                    self.error(
                        Diagnostic::error("E0009", format!("input `{name}` has shape {shape}, which needs a matrix parameter"), span)
                            .label(if update_dims == 1 { "in an update for vectors, which have no `cols`" } else { "in an update for any shape" })
                            .note(entry.span, "declared here")
                            .hint("read it in `update(p: [rows, cols], g)`, or declare it without a shape (like the parameter)"),
                    );
                    return None;
                }
                if *optional && !self.present.iter().any(|p| p == name) {
                    self.error(
                        Diagnostic::error("E0027", format!("optional input `{name}` may be absent here"), span)
                            .label("read where no `present` test holds")
                            .note(entry.span, "declared `optional`")
                            .hint(format!("read it inside `if present({name}) {{ ... }}`: a step without `{name}` skips that block")),
                    );
                    return None;
                }
                if let (Some(d), false) = (self.input_dim_of(&shape), self.contracting) {
                    self.error(
                        Diagnostic::error("E0028", format!("input `{name}` has the dimension `{d}` of its own, which only `@` can consume"), span)
                            .label(format!("shape {shape}"))
                            .note(entry.span, "declared here")
                            .hint(format!("contract `{d}` in a product such as `{name}.T @ {name}`; elementwise work and reductions need the parameter's dimensions")),
                    );
                    return None;
                }
            }
            Entity::State { initialised } => {
                if !self.used_state.iter().any(|s| s == name) {
                    self.used_state.push(name.to_string());
                }
                match self.ctx {
                    Ctx::Prepare => {
                        let d = self.state_in_prepare(name, span, &entry);
                        self.error(d);
                        return None;
                    }
                    Ctx::Init => {
                        self.error(
                            Diagnostic::error("E0023", format!("state `{name}` cannot be read in a state initialiser"), span)
                                .label("another state")
                                .note(entry.span, "declared here")
                                .hint("initialise from `zeros`, numbers, hyperparameters, `p` and `eye`; copy one state into another in `update`"),
                        );
                        return None;
                    }
                    _ => {}
                }
                if let Some(Ty { shape: shape @ Shape::Dims(_), .. }) = &entry.ty {
                    if !super::shape_available(update_dims, shape, &[]) {
                        let d = self.state_needs_matrix(name, span, &entry);
                        self.error(d);
                        return None;
                    }
                }
                if !initialised && !self.assigned.iter().any(|s| s == name) {
                    if !self.reported_uninit.iter().any(|s| s == name) {
                        self.reported_uninit.push(name.to_string());
                        self.error(
                            Diagnostic::error("E0007", format!("state `{name}` is read before it is initialised"), span)
                                .label("read here")
                                .note(entry.span, "declared without an initialiser")
                                .hint(format!("give it an initial value (`state {name} = zeros`) or assign it on every path before this read")),
                        );
                    }
                    return None;
                }
            }
            Entity::ShapeScalar
                if !builtins::ANY_RANK_SCALARS.contains(&name)
                    && self.ctx != Ctx::Init
                    && !(update_dims == 2 || (update_dims == 1 && name == "rows")) =>
            {
                self.error(
                    Diagnostic::error("E0009", format!("`{name}` needs a matrix parameter"), span)
                        .label(if update_dims == 1 { "in an update for vectors" } else { "in an update for any shape" })
                        .hint("write the update as `update(p: [rows, cols], g)` (a vector's update has `rows` only); `numel` works for any shape"),
                );
                return None;
            }
            _ => {}
        }
        entry.ty
    }

    /// The closest function (`call`) or name in scope, for "did you mean".
    fn similar_name(&self, name: &str, call: bool) -> Option<String> {
        let candidates: Vec<String> = if call {
            let builtin = builtins::FUNCTIONS.iter().map(|b| b.name.to_string());
            builtin.chain(self.file.fns.iter().map(|f| f.name.name.clone())).collect()
        } else {
            self.scopes.iter().flat_map(|s| s.keys().cloned()).collect()
        };
        candidates
            .into_iter()
            .map(|c| (edit_distance(name, &c), c))
            .filter(|(d, c)| *d <= 2 && *d < name.len().max(c.len()) && *d < name.len().min(c.len()).max(2))
            .min()
            .map(|(_, c)| c)
    }

    /// A name that exists, but not where it is used: state, the parameter, the gradient and
    /// the shape scalars in `prepare`, which runs once for all parameters; the gradient in
    /// a state initialiser.
    pub(crate) fn unavailable(&self, name: &str, span: Span) -> Option<Diagnostic> {
        let opt = self.file.optimizers.first()?;
        let is_param = opt.updates.iter().any(|u| u.param.name.name == name);
        let is_grad = opt.updates.iter().any(|u| u.grad.name.name == name);
        match self.ctx {
            Ctx::Prepare if is_param || is_grad || builtins::SHAPE_SCALARS.contains(&name) => Some(
                Diagnostic::error("E0023", format!("`{name}` cannot be used in `prepare`"), span)
                    .label("belongs to one parameter")
                    .hint("`prepare` runs once per step for all parameters; per-parameter work goes in `update`"),
            ),
            Ctx::Init if is_grad => Some(
                Diagnostic::error("E0023", format!("the gradient `{name}` cannot be used in a state initialiser"), span)
                    .label("no gradient yet")
                    .hint("state is initialised before the first step; initialise from `zeros`, numbers, hyperparameters, `p` and `eye`"),
            ),
            _ => None,
        }
    }

    /// `axis_min(acc)` (per-axis state to the parameter's shape) and `axis_max(x)` (the
    /// parameter's shape to per-axis state): only in an update, whose parameter they cover.
    fn check_per_axis(&mut self, name: &str, kind: Kind, arg: &Ty, arg_span: Span, span: Span) -> Option<Ty> {
        let Ctx::Update { dims } = self.ctx else {
            self.error(
                Diagnostic::error("E0023", format!("`{name}` cannot be used here"), span)
                    .label(self.outside_update())
                    .hint("`axis_min` and `axis_max` cover the parameter being updated: call them in `update`"),
            );
            return None;
        };
        let pshape = match dims {
            0 => Shape::Like,
            1 => Shape::dims(&["rows"]),
            _ => Shape::dims(&["rows", "cols"]),
        };
        let axes = Shape::dims(&[crate::builtins::AXES]);
        let (want, out, hint) = if kind == Kind::AxisMin {
            (&axes, &pshape, "declare the accumulators as `state acc: [axes] = zeros` and write `axis_min(acc)`")
        } else {
            (&pshape, &axes, "`axis_max(x)` takes a value shaped like the parameter (`g * g`, a state like `p`)")
        };
        if arg.shape != *want || arg.elem != Elem::Num {
            self.error(
                Diagnostic::error("E0005", format!("`{name}` needs {want}, found {arg}"), arg_span)
                    .label(format!("this is {arg}"))
                    .hint(hint),
            );
            return None;
        }
        Some(Ty::num(out.clone()))
    }

    /// Where code outside an update runs, as a label for "cannot be used here".
    fn outside_update(&self) -> &'static str {
        match self.ctx {
            Ctx::Prepare => "in `prepare`",
            Ctx::Fn => "in a function",
            _ => "in a state initialiser",
        }
    }

    /// The first input dimension (`batch`) among `shape`'s, if any.
    pub(crate) fn input_dim_of(&self, shape: &Shape) -> Option<String> {
        match shape {
            Shape::Dims(d) => d.iter().find(|x| self.input_dims.contains(x)).cloned(),
            _ => None,
        }
    }

    /// A name the optimizer defines: hyperparameters, globals, state, the update's
    /// parameter and gradient, and the built-ins.
    fn is_optimizer_name(&self, name: &str) -> bool {
        let Some(opt) = self.file.optimizers.first() else { return false };
        super::is_builtin_name(name)
            || opt.hypers.iter().any(|h| h.name.name == name)
            || opt.globals.iter().any(|g| g.name.name == name)
            || opt.states.iter().any(|s| s.name.name == name)
            || opt.updates.iter().any(|u| u.param.name.name == name || u.grad.name.name == name)
    }

    /// State is per parameter; `prepare` runs once per step for all of them.
    pub(crate) fn state_in_prepare(&self, name: &str, span: Span, entry: &super::Entry) -> Diagnostic {
        Diagnostic::error("E0023", format!("state `{name}` cannot be used in `prepare`"), span)
            .label("per-parameter state")
            .note(entry.span, "declared here")
            .hint("`prepare` runs once per step for all parameters; read and assign state in `update`")
    }

    /// State shaped `[rows]`, `[cols, cols]`, ... exists only for matrix parameters.
    pub(crate) fn state_needs_matrix(&self, name: &str, span: Span, entry: &super::Entry) -> Diagnostic {
        let shape = entry.ty.as_ref().map(|t| t.shape.to_string()).unwrap_or_default();
        let label = match self.ctx {
            Ctx::Update { dims: 1 } => "used in an update for vectors, which have no `cols`",
            _ => "used in an update for any shape",
        };
        Diagnostic::error("E0009", format!("state `{name}` has shape {shape}, which needs a matrix parameter"), span)
            .label(label)
            .note(entry.span, "declared here")
            .hint("use it in `update(p: [rows, cols], g)`, or declare it without a shape (like the parameter)")
    }

    fn check_binary(&mut self, op: BinOp, ta: Ty, tb: Ty, sa: Span, sb: Span, span: Span) -> Option<Ty> {
        // `==` and `!=` compare two bools as well as two numbers.
        let bool_equality = matches!(op, BinOp::Eq | BinOp::Ne) && ta.elem == Elem::Bool && tb.elem == Elem::Bool;
        let want = if op.is_logical() || bool_equality { Elem::Bool } else { Elem::Num };
        for (t, s) in [(&ta, sa), (&tb, sb)] {
            if t.elem != want {
                let what = if want == Elem::Bool { "bools" } else { "numbers" };
                self.error(
                    Diagnostic::error("E0014", format!("`{}` needs {what}, found {t}", op.symbol()), s)
                        .label(format!("this is {t}"))
                        .hint(if want == Elem::Bool {
                            "compare numbers first, e.g. `x > 0 && y > 0`"
                        } else {
                            "turn a condition into a number with `where(c, 1, 0)`"
                        }),
                );
                return None;
            }
        }
        if op == BinOp::MatMul {
            if ta.is_scalar() || tb.is_scalar() {
                self.error(
                    Diagnostic::error(
                        "E0004",
                        "`@` needs two tensors, found a scalar",
                        if ta.is_scalar() { sa } else { sb },
                    )
                    .label("a scalar")
                    .hint("scale a tensor by a scalar with `*`"),
                );
                return None;
            }
            return match types::matmul(&ta.shape, &tb.shape) {
                Ok(shape) => Some(Ty::num(shape)),
                Err(err) => {
                    self.shape_error(err, span);
                    None
                }
            };
        }
        self.note_broadcast(&ta.shape, &tb.shape, span);
        match types::broadcast(&ta.shape, &tb.shape) {
            Ok(shape) => {
                let elem = if op.is_comparison() || op.is_logical() { Elem::Bool } else { Elem::Num };
                Some(Ty { elem, shape })
            }
            Err(err) => {
                self.shape_error(err, span);
                None
            }
        }
    }

    /// `has_role(r1, r2, ...)`: role names, at least one, each once; a bool scalar.
    fn check_has_role(&mut self, args: &[Arg], span: Span) -> Option<Ty> {
        let mut ok = true;
        if args.is_empty() {
            self.error(
                Diagnostic::error("E0003", "`has_role` takes at least one role", span)
                    .label("no role")
                    .hint(format!("name roles: `has_role(bias, norm)`; the roles are {}", builtins::ROLES.join(", "))),
            );
            return None;
        }
        let mut seen: Vec<&str> = Vec::new();
        for a in args {
            let role = match (&a.name, &a.value.kind) {
                (None, ExprKind::Name(n)) if builtins::ROLES.contains(&n.as_str()) => n.as_str(),
                _ => {
                    self.error(
                        Diagnostic::error("E0018", "`has_role` takes role names", a.value.span)
                            .label("not a role")
                            .hint(format!("the roles are {}", builtins::ROLES.join(", "))),
                    );
                    ok = false;
                    continue;
                }
            };
            if seen.contains(&role) {
                self.error(
                    Diagnostic::error("E0018", format!("role `{role}` is named twice"), a.value.span)
                        .label("again")
                        .hint("name each role once"),
                );
                ok = false;
            }
            seen.push(role);
        }
        if !matches!(self.ctx, Ctx::Update { .. } | Ctx::Init) {
            self.error(
                Diagnostic::error("E0023", "`has_role` can only be used in `update` or a state initialiser", span)
                    .label("no parameter here")
                    .hint("`prepare` runs once per step for all parameters, and a function sees only its arguments: read a parameter's role in `update` and pass it on"),
            );
            return None;
        }
        ok.then_some(Ty::BOOL)
    }

    /// `present(h)`: one optional input, in an update, or one optional hyperparameter.
    fn check_present(&mut self, args: &[Arg], span: Span) -> Option<Ty> {
        let hint = "`present(h)` takes the name of an input declared `optional input h` or a hyperparameter declared `optional hyper h`";
        let [arg] = args else {
            self.error(
                Diagnostic::error("E0003", format!("`present` takes 1 argument, got {}", args.len()), span)
                    .label("wrong number of arguments")
                    .hint(hint),
            );
            return None;
        };
        let entry = match (&arg.name, &arg.value.kind) {
            (None, ExprKind::Name(n)) => self.lookup(n).map(|e| (n.clone(), e)),
            _ => None,
        };
        match entry {
            Some((_, e))
                if e.entity == (Entity::Input { optional: true }) && matches!(self.ctx, Ctx::Update { .. }) =>
            {
                Some(Ty::BOOL)
            }
            Some((_, e)) if matches!(e.entity, Entity::Hyper { optional: true, .. }) => Some(Ty::BOOL),
            Some((n, e)) if matches!(e.entity, Entity::Hyper { optional: false, .. }) => {
                self.error(
                    Diagnostic::error("E0027", format!("hyperparameter `{n}` is not optional"), arg.value.span)
                        .label("always set")
                        .note(e.span, "declared here")
                        .hint(format!("declare it `optional hyper {n} = none` if it may be unset")),
                );
                None
            }
            Some((n, e)) if e.entity == (Entity::Input { optional: false }) => {
                self.error(
                    Diagnostic::error("E0027", format!("input `{n}` is not optional"), arg.value.span)
                        .label("always present when read")
                        .note(e.span, "declared here")
                        .hint(format!("declare it `optional input {n}` if a step may come without it")),
                );
                None
            }
            Some((_, e)) if matches!(e.entity, Entity::Input { .. }) => {
                self.error(
                    Diagnostic::error("E0023", "`present` cannot be used here", span)
                        .label("outside an update")
                        .hint("inputs come with each parameter's step: test them in `update`"),
                );
                None
            }
            _ => {
                self.error(
                    Diagnostic::error("E0018", "`present` needs the name of an optional input", arg.value.span)
                        .label("not an input")
                        .hint(hint),
                );
                None
            }
        }
    }

    fn check_call(&mut self, name: &str, name_span: Span, args: &[Arg], span: Span) -> Option<Ty> {
        if let Some(f) = self.file.fns.iter().find(|f| f.name.name == name) {
            return self.check_user_call(f, args, span);
        }
        let Some(b) = builtins::function(name) else {
            let hint = match self.similar_name(name, true) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "the built-in functions are listed in docs/language.md; define your own with `fn`".to_string(),
            };
            self.error(
                Diagnostic::error("E0002", format!("unknown function `{name}`"), name_span)
                    .label("not defined")
                    .hint(hint),
            );
            self.check_args(args);
            return None;
        };
        if b.kind == Kind::HasRole {
            return self.check_has_role(args, span);
        }
        if b.kind == Kind::Present {
            return self.check_present(args, span);
        }
        let positional: Vec<&Arg> = args.iter().filter(|a| a.name.is_none()).collect();
        let b = builtins::reduction_form(name, positional.len()).unwrap_or(b);
        let mut axis = None;
        let mut ok = true;
        let decomposition = matches!(b.kind, Kind::InvRoot | Kind::Eigvecs | Kind::Eigvals | Kind::Qr);
        let mut precision_given = false;
        let mut method_given = false;
        for a in args.iter().filter(|a| a.name.is_some()) {
            let n = a.name.as_ref().expect("named");
            if decomposition && n.name == "precision" {
                ok &= self.check_precision(a, precision_given);
                precision_given = true;
                continue;
            }
            if b.kind == Kind::InvRoot && n.name == "method" {
                ok &= self.check_method(a, method_given);
                method_given = true;
                continue;
            }
            if b.kind != Kind::Reduce || n.name != "axis" {
                self.error(
                    Diagnostic::error("E0018", format!("`{name}` takes no argument named `{}`", n.name), n.span)
                        .label("unknown argument")
                        .hint(if b.kind == Kind::InvRoot {
                            "`inv_root` takes `precision = f32 | f64` and `method = eigh | newton`"
                        } else if decomposition {
                            "a decomposition takes one named argument, `precision = f32` or `precision = f64`"
                        } else {
                            "only the reductions `sum`, `mean`, `norm`, `max_abs`, `max(x)` and `min(x)` take `axis = 0 | 1`, the decompositions `inv_root`, `eigvecs`, `eigvals`, `qr` take `precision = f32 | f64`, and `inv_root` takes `method = eigh | newton`"
                        }),
                );
                ok = false;
                continue;
            }
            if axis.is_some() {
                self.error(
                    Diagnostic::error("E0018", "`axis` is given twice", n.span)
                        .label("a second `axis`")
                        .hint("a reduction runs along one axis: `axis = 0` or `axis = 1`"),
                );
                ok = false;
                continue;
            }
            match a.value.kind {
                ExprKind::Number(v) if v == 0.0 || v == 1.0 => axis = Some(v as usize),
                _ => {
                    self.error(
                        Diagnostic::error("E0018", "`axis` must be the literal 0 or 1", a.value.span)
                            .label("not 0 or 1")
                            .hint("axis 0 reduces over rows (leaving [cols]); axis 1 over columns (leaving [rows])"),
                    );
                    ok = false;
                }
            }
        }
        if positional.len() != b.arity {
            self.error(
                Diagnostic::error(
                    "E0003",
                    format!(
                        "`{name}` takes {} argument{}, found {}",
                        b.arity,
                        if b.arity == 1 { "" } else { "s" },
                        positional.len()
                    ),
                    span,
                )
                .label("wrong number of arguments")
                .hint(format!("{name}: {}", b.doc)),
            );
            ok = false;
        }
        if !ok {
            self.check_args(&positional.into_iter().cloned().collect::<Vec<_>>());
            return None;
        }
        let tys: Vec<Option<Ty>> = positional.iter().map(|a| self.check_expr(&a.value)).collect();
        let tys: Vec<Ty> = tys.into_iter().collect::<Option<_>>()?;
        for (i, (t, a)) in tys.iter().zip(&positional).enumerate() {
            let want = if b.kind == Kind::Where && i == 0 { Elem::Bool } else { Elem::Num };
            if t.elem != want {
                self.error(
                    Diagnostic::error(
                        "E0014",
                        format!(
                            "argument {} of `{name}` must be {}, found {t}",
                            i + 1,
                            if want == Elem::Bool { "a bool" } else { "a number" }
                        ),
                        a.value.span,
                    )
                    .label(format!("this is {t}"))
                    .hint(format!("{name}: {}", b.doc)),
                );
                return None;
            }
        }
        match b.kind {
            Kind::Elementwise | Kind::Where => {
                let mut shape = Shape::Scalar;
                for t in &tys {
                    self.note_broadcast(&shape, &t.shape, span);
                    match types::broadcast(&shape, &t.shape) {
                        Ok(s) => shape = s,
                        Err(err) => {
                            self.shape_error(err, span);
                            return None;
                        }
                    }
                }
                Some(Ty::num(shape))
            }
            Kind::Reduce | Kind::Dot => {
                if tys.iter().any(Ty::is_scalar) {
                    self.error(
                        Diagnostic::error(
                            "E0004",
                            format!("`{name}` reduces a tensor, found a scalar"),
                            positional[0].value.span,
                        )
                        .label("a scalar")
                        .hint("a reduction of a scalar is the scalar itself; drop the call"),
                    );
                    return None;
                }
                if b.kind == Kind::Dot && tys[0].shape != tys[1].shape {
                    self.shape_error(
                        ShapeError::Mismatch(format!(
                            "`dot` needs two tensors of one shape, found {} and {}",
                            tys[0].shape, tys[1].shape
                        )),
                        span,
                    );
                    return None;
                }
                match axis {
                    None => Some(Ty::NUM),
                    Some(ax) => match types::reduce_axis(&tys[0].shape, ax) {
                        Ok(s) => Some(Ty::num(s)),
                        Err(err) => {
                            self.shape_error(err, span);
                            None
                        }
                    },
                }
            }
            Kind::Schedule => {
                for (t, a) in tys.iter().zip(&positional) {
                    if !t.is_scalar() {
                        self.error(
                            Diagnostic::error("E0004", format!("`{name}` takes scalars, found {t}"), a.value.span)
                                .label("a tensor")
                                .hint("a schedule maps a step to a value: give it `step` and hyperparameters, in `prepare`"),
                        );
                        return None;
                    }
                }
                Some(Ty::NUM)
            }
            Kind::Global => {
                if !matches!(self.ctx, Ctx::Update { .. }) {
                    self.error(
                        Diagnostic::error("E0023", format!("`{name}` cannot be used here"), span)
                            .label(self.outside_update())
                            .hint("a global reduction reads every parameter's tensors: call it in `update`, where it sees the gradients of the whole step"),
                    );
                    return None;
                }
                if tys[0].is_scalar() {
                    self.error(
                        Diagnostic::error(
                            "E0004",
                            format!("`{name}` reduces a tensor, found a scalar"),
                            positional[0].value.span,
                        )
                        .label("a scalar")
                        .hint(
                            "pass the tensor whose elements to reduce over every parameter, such as `global_norm(g)`",
                        ),
                    );
                    return None;
                }
                self.uses_global_reduction = Some(span);
                Some(Ty::NUM)
            }
            Kind::HasRole | Kind::Present => None,
            Kind::AxisMin | Kind::AxisMax => self.check_per_axis(name, b.kind, &tys[0], positional[0].value.span, span),
            Kind::Outer => match (&tys[0].shape, &tys[1].shape) {
                (Shape::Dims(a), Shape::Dims(b)) if a.len() == 1 && b.len() == 1 => {
                    Some(Ty::num(Shape::Dims(vec![a[0].clone(), b[0].clone()])))
                }
                (Shape::Like, _) | (_, Shape::Like) => {
                    self.error(
                        Diagnostic::error(
                            "E0009",
                            "`outer` needs vectors, but this value is shaped like a parameter of any rank",
                            span,
                        )
                        .label("no named dimension here")
                        .hint("write the update as `update(p: [rows], g)` so it applies to vectors"),
                    );
                    None
                }
                (a, b) => {
                    self.error(
                        Diagnostic::error(
                            "E0005",
                            format!("shape mismatch: `outer` needs two vectors, found {a} and {b}"),
                            span,
                        )
                        .label("not two vectors")
                        .hint("outer(a, b) of a `[rows]` and a `[cols]` (or the same) vector; for matrices use `@`"),
                    );
                    None
                }
            },
            Kind::Eigvecs | Kind::Eigvals | Kind::Qr => {
                let what = b.name;
                match tys[0].shape.rank2() {
                    Some((a, c)) if a == c || b.kind == Kind::Qr => Some(Ty::num(match b.kind {
                        Kind::Eigvals => Shape::Dims(vec![a.to_string()]),
                        _ => tys[0].shape.clone(),
                    })),
                    _ if tys[0].shape == Shape::Like => {
                        self.shape_error(ShapeError::NeedsMatrix(format!("`{what}`")), span);
                        None
                    }
                    _ => {
                        let need = if b.kind == Kind::Qr { "a matrix" } else { "a square matrix" };
                        self.error(
                            Diagnostic::error("E0020", format!("`{what}` needs {need}, found {}", tys[0].shape), span)
                                .label(if b.kind == Kind::Qr { "not a matrix" } else { "not square" })
                                .hint(format!("{what}: {}", b.doc)),
                        );
                        None
                    }
                }
            }
            Kind::SortPerm => {
                match &tys[0].shape {
                    Shape::Dims(d) if d.len() == 1 => Some(Ty::num(Shape::Dims(vec![d[0].clone(), d[0].clone()]))),
                    Shape::Like => {
                        self.shape_error(ShapeError::NeedsMatrix("`sort_perm`".into()), span);
                        None
                    }
                    other => {
                        self.error(
                        Diagnostic::error("E0005", format!("shape mismatch: `sort_perm` needs a vector, found {other}"), span)
                            .label("not a vector")
                            .hint("sort by a `[rows]` or `[cols]` key, such as `eigvals(m)` or `sum(q * (m @ q), axis = 0)`"),
                    );
                        None
                    }
                }
            }
            Kind::InvRoot => {
                if !tys[1].is_scalar() {
                    self.error(
                        Diagnostic::error(
                            "E0004",
                            "the root of `inv_root(m, k)` must be a scalar",
                            positional[1].value.span,
                        )
                        .label("a tensor")
                        .hint("write the root as a number, e.g. `inv_root(L, 4)` for L^(-1/4)"),
                    );
                    return None;
                }
                match tys[0].shape.rank2() {
                    Some((a, b)) if a == b => Some(tys[0].clone()),
                    _ if tys[0].shape == Shape::Like => {
                        self.shape_error(ShapeError::NeedsMatrix("`inv_root`".into()), span);
                        None
                    }
                    _ => {
                        self.error(
                            Diagnostic::error(
                                "E0020",
                                format!("`inv_root` needs a square matrix, found {}", tys[0].shape),
                                span,
                            )
                            .label("not square")
                            .hint("pass a symmetric `[rows, rows]` or `[cols, cols]` matrix, such as `g @ g.T`"),
                        );
                        None
                    }
                }
            }
            Kind::Eye => match tys[0].shape.rank2() {
                Some((a, b)) if a == b => Some(tys[0].clone()),
                _ if tys[0].shape == Shape::Like => {
                    self.shape_error(ShapeError::NeedsMatrix("`eye`".into()), span);
                    None
                }
                _ => {
                    self.error(
                        Diagnostic::error(
                            "E0020",
                            format!("`eye` needs a square matrix, found {}", tys[0].shape),
                            span,
                        )
                        .label("not square")
                        .hint("pass a `[rows, rows]` or `[cols, cols]` matrix, e.g. `eye(x @ x.T)`"),
                    );
                    None
                }
            },
        }
    }

    /// `precision = f32 | f64` on a decomposition: true when it is well-formed.
    fn check_precision(&mut self, a: &Arg, given_before: bool) -> bool {
        self.check_choice(
            a,
            given_before,
            ["f32", "f64"],
            ("a precision", "a decomposition runs in one precision: `precision = f32` or `precision = f64`"),
            "float64 (the default) is accurate for ill-conditioned statistics; `precision = f32` is about twice as fast on the CPU",
        )
    }

    /// `method = eigh | newton` on `inv_root`: true when it is well-formed.
    fn check_method(&mut self, a: &Arg, given_before: bool) -> bool {
        self.check_choice(
            a,
            given_before,
            ["eigh", "newton"],
            ("a method", "an inverse root is computed one way: `method = eigh` or `method = newton`"),
            "`eigh` (the default) goes through an eigendecomposition; `newton` runs the coupled Newton iteration, matrix products only, and falls back to `eigh` when it does not converge",
        )
    }

    /// A named argument `key = one of two names`, given once (E0018 otherwise): true when
    /// it is well-formed. `what` is the noun for a value and the hint for a repeat.
    fn check_choice(
        &mut self,
        a: &Arg,
        given_before: bool,
        [x, y]: [&str; 2],
        (what, twice_hint): (&str, &str),
        bad_hint: &str,
    ) -> bool {
        let n = a.name.as_ref().expect("named");
        let key = &n.name;
        if given_before {
            self.error(
                Diagnostic::error("E0018", format!("`{key}` is given twice"), n.span)
                    .label(format!("a second `{key}`"))
                    .hint(twice_hint),
            );
            return false;
        }
        match &a.value.kind {
            ExprKind::Name(v) if v == x || v == y => true,
            _ => {
                self.error(
                    Diagnostic::error("E0018", format!("`{key}` must be `{x}` or `{y}`"), a.value.span)
                        .label(format!("not {what}"))
                        .hint(bad_hint),
                );
                false
            }
        }
    }

    /// Checks argument values only for the errors inside them (and to mark state as used),
    /// after the call itself was found wrong.
    fn check_args(&mut self, args: &[Arg]) {
        for a in args {
            self.check_expr(&a.value);
        }
    }

    /// A call of a user function: arguments are matched against the parameter types, binding
    /// the function's dimension names (and `tensor`'s shape) to the caller's.
    fn check_user_call(&mut self, f: &FnDef, args: &[Arg], span: Span) -> Option<Ty> {
        if let Some(named) = args.iter().find_map(|a| a.name.as_ref()) {
            self.error(
                Diagnostic::error("E0018", format!("`{}` takes positional arguments only", f.name.name), named.span)
                    .label("named argument")
                    .hint("drop the `name =`: arguments are matched by position"),
            );
            self.check_args(args);
            return None;
        }
        if args.len() != f.params.len() {
            let n = f.params.len();
            self.error(
                Diagnostic::error(
                    "E0003",
                    format!(
                        "`{}` takes {n} argument{}, found {}",
                        f.name.name,
                        if n == 1 { "" } else { "s" },
                        args.len()
                    ),
                    span,
                )
                .label("wrong number of arguments")
                .note(f.name.span, "defined here")
                .hint(format!("call it as {}", signature(f))),
            );
            self.check_args(args);
            return None;
        }
        if let Some(cur) = self.current_fn.clone() {
            self.calls.entry(cur).or_default().push((f.name.name.clone(), span));
        }
        let mut dims: HashMap<String, String> = HashMap::new();
        let mut like: Option<Shape> = None;
        let mut ok = true;
        for (p, a) in f.params.iter().zip(args) {
            let Some(aty) = self.check_expr(&a.value) else {
                ok = false;
                continue;
            };
            let Some(pty) = param_type(p) else { continue };
            if pty.elem != aty.elem {
                self.error(
                    Diagnostic::error(
                        "E0014",
                        format!("parameter `{}` is {pty}, found {aty}", p.name.name),
                        a.value.span,
                    )
                    .label(format!("this is {aty}"))
                    .note(p.span, "parameter declared here")
                    .hint(if pty.elem == Elem::Bool {
                        "pass a condition such as `x > 0`"
                    } else {
                        "turn a condition into a number with `where(c, 1, 0)`"
                    }),
                );
                ok = false;
                continue;
            }
            let mismatch = match (&pty.shape, &aty.shape) {
                (Shape::Scalar, Shape::Scalar) => None,
                (Shape::Scalar, _) | (_, Shape::Scalar) => {
                    Some(("E0004", format!("parameter `{}` is {pty}, found {aty}", p.name.name)))
                }
                (Shape::Like, s) => match &like {
                    Some(l) if l != s => {
                        Some(("E0005", format!("all `tensor` arguments share one shape: {l} and {s} differ")))
                    }
                    _ => {
                        like = Some(s.clone());
                        None
                    }
                },
                (Shape::Dims(_), Shape::Like) => {
                    self.shape_error(
                        ShapeError::NeedsMatrix(format!("parameter `{}: {}`", p.name.name, pty.shape)),
                        a.value.span,
                    );
                    ok = false;
                    continue;
                }
                (Shape::Dims(pd), Shape::Dims(ad)) if pd.len() == ad.len() => {
                    let mut m = None;
                    for (x, y) in pd.iter().zip(ad) {
                        match dims.get(x) {
                            Some(bound) if bound != y => {
                                m = Some((
                                    "E0005",
                                    format!(
                                        "dimension `{x}` of `{}` is `{bound}` here but `{y}` in this argument",
                                        f.name.name
                                    ),
                                ));
                            }
                            _ => {
                                dims.insert(x.clone(), y.clone());
                            }
                        }
                    }
                    m
                }
                (Shape::Dims(_), _) => {
                    Some(("E0005", format!("parameter `{}` is {}, found {}", p.name.name, pty.shape, aty.shape)))
                }
            };
            if let Some((code, msg)) = mismatch {
                let hint = match &pty.shape {
                    Shape::Scalar => "pass a scalar: reduce a tensor first (`sum`, `norm`, ...)",
                    Shape::Like => "every `tensor` parameter of a function takes the same shape",
                    Shape::Dims(_) => "a dimension name stands for one size in all parameters; transpose with `.T` or reduce with `axis =` to line them up",
                };
                self.error(
                    Diagnostic::error(code, format!("shape mismatch: {msg}"), a.value.span)
                        .label("argument does not fit")
                        .note(p.span, "parameter declared here")
                        .hint(hint),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let ret = self.fn_return_type(f, span)?;
        if !self.check_square_binding(f, &dims, span) {
            return None;
        }
        let bounds = self.loop_bound_params.get(&f.name.name).cloned().unwrap_or_default();
        for i in bounds {
            if !self.is_static_bound(&args[i].value) {
                let p = &f.params[i];
                self.error(
                    Diagnostic::error("E0015", format!("`{}` bounds a loop in `{}`, so it must be known when compiling", p.name.name, f.name.name), args[i].value.span)
                        .label("not a whole-number literal or a ranged `int` hyperparameter")
                        .note(p.span, "used as a loop bound")
                        .hint("pass a literal such as `5`, or an `int` hyperparameter with a range (`hyper n: int = 5 in 0..=10`)"),
                );
                return None;
            }
        }
        Some(Ty { elem: ret.elem, shape: substitute(&ret.shape, &dims, like.as_ref()) })
    }
}

impl Checker<'_> {
    /// Records, inside a function, which of its dimension names an elementwise operation on
    /// shapes `a` and `b` broadcasts against each other (see `fn_broadcasts`).
    pub(crate) fn note_broadcast(&mut self, a: &Shape, b: &Shape, span: Span) {
        let (Some(f), Shape::Dims(da), Shape::Dims(db)) = (&self.current_fn, a, b) else { return };
        if da == db {
            return;
        }
        let mut names: Vec<&String> = da.iter().chain(db).collect();
        names.sort();
        names.dedup();
        let records = self.fn_broadcasts.entry(f.clone()).or_default();
        for (i, x) in names.iter().enumerate() {
            for y in &names[i + 1..] {
                records.push(((*x).clone(), (*y).clone(), span));
            }
        }
    }

    /// A call of `f` binding its dimensions as `dims` (its name -> the caller's): refused if
    /// two names that `f` broadcasts against each other become one dimension; otherwise the
    /// broadcasts carry over to the calling function, in the caller's names.
    fn check_square_binding(&mut self, f: &FnDef, dims: &HashMap<String, String>, span: Span) -> bool {
        let records = self.fn_broadcasts.get(&f.name.name).cloned().unwrap_or_default();
        for (x, y, at) in records {
            let (Some(bx), Some(by)) = (dims.get(&x), dims.get(&y)) else { continue };
            if bx == by {
                self.error(
                    Diagnostic::error(
                        "E0005",
                        format!(
                            "this call makes `{}`'s dimensions `{x}` and `{y}` both `{bx}`, and the function \
                             broadcasts a value over one of them against the other",
                            f.name.name
                        ),
                        span,
                    )
                    .label(format!("`{x}` and `{y}` are both `{bx}` here"))
                    .note(at, "it broadcasts here (directly, or in a function it calls): on a square shape, which axis repeats?")
                    .hint("pass arguments whose dimensions differ, or write the square case without broadcasting a vector against a matrix"),
                );
                return false;
            }
            if let Some(g) = self.current_fn.clone() {
                self.fn_broadcasts.entry(g).or_default().push((bx.clone(), by.clone(), span));
            }
        }
        true
    }
}

/// `name(x: tensor, s: f32)`, for hints.
fn signature(f: &FnDef) -> String {
    use crate::ast::{ScalarTy, TypeExpr};
    let params: Vec<String> = f
        .params
        .iter()
        .map(|p| match &p.ty {
            None => p.name.name.clone(),
            Some(TypeExpr::Scalar(t, _)) => {
                let t = match t {
                    ScalarTy::F32 => "f32",
                    ScalarTy::Int => "int",
                    ScalarTy::Bool => "bool",
                };
                format!("{}: {t}", p.name.name)
            }
            Some(TypeExpr::AnyTensor(_)) => format!("{}: tensor", p.name.name),
            Some(TypeExpr::Shape(s)) => {
                let dims: Vec<&str> = s.dims.iter().map(|d| d.name.as_str()).collect();
                format!("{}: [{}]", p.name.name, dims.join(", "))
            }
        })
        .collect();
    format!("`{}({})`", f.name.name, params.join(", "))
}

/// The type a function parameter is declared with (`None` if it has none: reported once,
/// where the function is defined).
pub(crate) fn param_type(p: &crate::ast::Param) -> Option<Ty> {
    use crate::ast::{ScalarTy, TypeExpr};
    Some(match p.ty.as_ref()? {
        TypeExpr::Scalar(ScalarTy::Bool, _) => Ty::BOOL,
        TypeExpr::Scalar(_, _) => Ty::NUM,
        TypeExpr::AnyTensor(_) => Ty::num(Shape::Like),
        TypeExpr::Shape(s) => Ty::num(Shape::from_names(s.dims.iter().map(|d| d.name.clone()).collect())),
    })
}

/// Replaces a function's dimension names by the caller's.
pub(crate) fn substitute(shape: &Shape, dims: &HashMap<String, String>, like: Option<&Shape>) -> Shape {
    match shape {
        Shape::Like => like.cloned().unwrap_or(Shape::Like),
        Shape::Dims(d) => Shape::Dims(d.iter().map(|x| dims.get(x).cloned().unwrap_or_else(|| x.clone())).collect()),
        Shape::Scalar => Shape::Scalar,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
