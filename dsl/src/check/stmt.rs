//! Checking statements: bindings, assignments (who may be assigned where), `if`, static
//! `for` loops, `every`, `return`, and which uninitialised state is assigned on every path.

use super::items::literal;
use super::{Checker, Ctx, Entity};
use crate::ast::{AssignOp, Block, Expr, ExprKind, Stmt};
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use crate::types::{self, Elem, Ty};

/// The most iterations a `for` loop may unroll to.
const MAX_UNROLL: f64 = 10_000.0;

/// The longest `every` period written as a literal: no training run takes 10^9 steps, so a
/// longer period is a mistake (an `int` hyperparameter may be set to anything at run time).
const MAX_PERIOD: f64 = 1e9;

impl Checker<'_> {
    /// Checks a block in a new scope. `fn_body` marks a function's top-level block, the only
    /// place a `return` (its last statement) may stand.
    pub(crate) fn check_block(&mut self, block: &Block, fn_body: bool) {
        self.push();
        let n = block.stmts.len();
        for (i, stmt) in block.stmts.iter().enumerate() {
            if let Stmt::Return { value, span } = stmt {
                if !(fn_body && i + 1 == n) {
                    self.error(
                        Diagnostic::error("E0016", "`return` must be the last statement of a function", *span)
                            .label(if self.ctx == Ctx::Fn { "not the last statement" } else { "outside a function" })
                            .hint(match self.ctx {
                                Ctx::Fn => "compute the result with `var` and `if`, and return it at the end",
                                Ctx::Prepare => {
                                    "`prepare` assigns globals and binds values with `let`; the updates read them"
                                }
                                _ => "an update assigns `p` and state instead of returning",
                            }),
                    );
                }
                self.check_expr(value);
                continue;
            }
            self.check_stmt(stmt);
        }
        self.pop();
    }

    pub(crate) fn check_stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let { names, value, span } => {
                if names.len() == 1 {
                    let ty = self.check_expr(value);
                    self.declare(&names[0].name, names[0].span, Entity::Let, ty);
                    self.note_local_value(&names[0].name, value);
                    return;
                }
                let ExprKind::Tuple(items) = &value.kind else {
                    self.error(
                        Diagnostic::error(
                            "E0022",
                            format!("`let` unpacks {} names but the value is not a tuple", names.len()),
                            value.span,
                        )
                        .label("not a tuple")
                        .hint("write the values in parentheses: `let (a, b) = (1, 2)`"),
                    );
                    return;
                };
                if items.len() != names.len() {
                    self.error(
                        Diagnostic::error(
                            "E0022",
                            format!("`let` unpacks {} names from {} values", names.len(), items.len()),
                            *span,
                        )
                        .label("counts differ")
                        .hint("give one value per name"),
                    );
                    return;
                }
                let tys: Vec<Option<Ty>> = items.iter().map(|e| self.check_expr(e)).collect();
                for ((n, ty), item) in names.iter().zip(tys).zip(items) {
                    self.declare(&n.name, n.span, Entity::Let, ty);
                    self.note_local_value(&n.name, item);
                }
            }
            Stmt::Var { name, value, .. } => {
                let ty = self.check_expr(value);
                self.declare(&name.name, name.span, Entity::Var, ty);
                self.note_local_value(&name.name, value);
            }
            Stmt::Assign { target, op, value, span } => self.check_assign(&target.name, target.span, *op, value, *span),
            Stmt::If { cond, then, otherwise, .. } => {
                self.check_condition(cond, "`if`");
                let per_param = matches!(self.ctx, Ctx::Update { .. }) && self.per_param_name(cond).is_some();
                if per_param {
                    self.per_param_conds.push(cond.span);
                }
                let before = self.assigned.clone();
                let outer_present = self.present.clone();
                self.present.extend(present_in(cond, true));
                self.check_block(then, false);
                self.present.clone_from(&outer_present);
                let after_then = std::mem::replace(&mut self.assigned, before.clone());
                if let Some(b) = otherwise {
                    self.present.extend(present_in(cond, false));
                    self.check_block(b, false);
                    self.present = outer_present;
                    let after_else = std::mem::take(&mut self.assigned);
                    self.assigned = after_then.into_iter().filter(|s| after_else.contains(s)).collect();
                } else {
                    self.assigned = before;
                }
                if per_param {
                    self.per_param_conds.pop();
                }
            }
            Stmt::For { var, start, end, body, .. } => {
                self.check_static_bound(start, false);
                self.check_static_bound(end, true);
                let before = self.assigned.clone();
                self.push();
                self.declare(&var.name, var.span, Entity::LoopVar, Some(Ty::NUM));
                self.check_block(body, false);
                self.pop();
                // A loop between literals runs at least once when its end is past its
                // start, so what its body assigns is assigned; a loop bounded by a
                // hyperparameter may run zero times.
                let runs = match (&start.kind, &end.kind) {
                    (ExprKind::Number(a), ExprKind::Number(b)) => b > a,
                    _ => false,
                };
                if !runs {
                    self.assigned = before;
                }
            }
            Stmt::Every { period, phase, body, .. } => {
                self.check_every_period(period, "period");
                if let Some(p) = phase {
                    self.check_every_period(p, "phase");
                }
                let before = self.assigned.clone();
                self.check_block(body, false);
                self.assigned = before;
            }
            Stmt::With { name, value, body, .. } => {
                self.check_setting(name, value);
                // The block always runs: what it assigns is assigned.
                self.check_block(body, false);
            }
            Stmt::Return { .. } => {}
        }
    }

    /// `with precision = p`: the only setting, whose value is a precision's name or a
    /// hyperparameter declared with one.
    fn check_setting(&mut self, name: &crate::ast::Ident, value: &Expr) {
        if name.name != "precision" {
            self.error(
                Diagnostic::error("E0018", format!("unknown setting `{}`", name.name), name.span)
                    .label("not a setting")
                    .hint("`with` sets the precision of matrix products: `with precision = bf16 { ... }`"),
            );
            return;
        }
        let ok = match &value.kind {
            ExprKind::Name(n) if crate::builtins::precision_value(n).is_some() => true,
            ExprKind::Name(n) => match self.lookup(n) {
                Some(e) => e.entity == Entity::PrecisionHyper,
                None => false,
            },
            _ => false,
        };
        if !ok {
            self.error(
                Diagnostic::error("E0018", "`precision` must be `bf16`, `tf32`, `f32` or a precision hyperparameter", value.span)
                    .label("not a precision")
                    .hint("write `with precision = bf16 { ... }`, or declare `hyper products = bf16` and write `with precision = products { ... }`"),
            );
        }
    }

    fn check_condition(&mut self, cond: &Expr, what: &str) {
        let Some(ty) = self.check_expr(cond) else { return };
        if !ty.is_scalar() {
            self.error(
                Diagnostic::error("E0004", format!("the condition of {what} must be a scalar, found {ty}"), cond.span)
                    .label("a tensor condition")
                    .hint("choose per element with `where(cond, a, b)`, or reduce first, e.g. `norm(g) > 1`"),
            );
        } else if ty.elem != Elem::Bool {
            self.error(
                Diagnostic::error("E0014", format!("the condition of {what} must be a bool, found {ty}"), cond.span)
                    .label("a number")
                    .hint("compare it: `x > 0`, `x != 0`"),
            );
        }
    }

    fn check_assign(&mut self, name: &str, span: Span, op: AssignOp, value: &Expr, stmt_span: Span) {
        let vty = self.check_expr(value);
        let Some(entry) = self.scopes.iter().rev().find_map(|s| s.get(name)).cloned() else {
            if let Some(d) = self.unavailable(name, span) {
                self.error(d);
                return;
            }
            self.error(
                Diagnostic::error("E0002", format!("unknown name `{name}`"), span)
                    .label("assigned but never declared")
                    .hint(format!("declare it first: `var {name} = ...` (or `state {name}` in the optimizer)")),
            );
            return;
        };
        let builtin = matches!(entry.entity, Entity::Step | Entity::ShapeScalar);
        let refuse = |what: &str, hint: &str| {
            let d = Diagnostic::error("E0013", format!("cannot assign to {what} `{name}`"), span)
                .label("assigned here")
                .hint(hint.to_string());
            // Built-ins have no declaration to point at.
            if builtin {
                d
            } else {
                d.note(entry.span, "declared here")
            }
        };
        if entry.entity == Entity::Var {
            self.note_local_value(name, value);
        }
        let d = match (&entry.entity, self.ctx) {
            (Entity::Hyper { .. } | Entity::PrecisionHyper, _) => Some(
                Diagnostic::error("E0006", format!("cannot assign to hyperparameter `{name}`"), span)
                    .label("hyperparameters are read-only in code")
                    .note(entry.span, "declared as `hyper` here")
                    .hint(format!(
                        "hyperparameters are set from training code; compute a new value with `let {name}_t = ...`"
                    )),
            ),
            (Entity::Grad, _) => {
                Some(refuse("the gradient", "the gradient is read-only; bind a modified copy with `let`"))
            }
            (Entity::Let, _) => Some(refuse("the `let` binding", "declare it with `var` to reassign it")),
            (Entity::LoopVar, _) => {
                Some(refuse("the loop variable", "loop variables count iterations; use a `var` for values"))
            }
            (Entity::FnParam { .. }, _) => Some(refuse("the function parameter", "copy it into a `var` first")),
            (Entity::Step | Entity::ShapeScalar, _) => Some(refuse("the built-in", "built-ins are read-only")),
            (Entity::Input { .. } | Entity::InputDim, _) => {
                Some(refuse("the input", "inputs are read-only; keep what must outlive the step in a `state`"))
            }
            (Entity::PrepareLet, _) => {
                Some(refuse("the `prepare` binding", "values from `prepare` are read-only in `update`"))
            }
            (Entity::Global, Ctx::Prepare) => None,
            (Entity::Global, Ctx::Update { .. }) => {
                self.check_global_in_update(name, span, value);
                None
            }
            (Entity::Global, _) => {
                Some(refuse("the global", "globals change in `prepare { ... }` or in `update`, once per step"))
            }
            (Entity::State { .. }, Ctx::Prepare) => Some(self.state_in_prepare(name, span, &entry)),
            (Entity::State { .. }, Ctx::Update { dims }) if matches!(&entry.ty, Some(t) if !super::shape_available(dims, &t.shape, &[])) => {
                Some(self.state_needs_matrix(name, span, &entry))
            }
            _ => None,
        };
        if let Entity::State { .. } = entry.entity {
            if !self.used_state.iter().any(|s| s == name) {
                self.used_state.push(name.to_string());
            }
        }
        if let Some(d) = d {
            self.error(d);
            return;
        }
        if let Entity::State { initialised: false } = entry.entity {
            if op != AssignOp::Set && !self.assigned.iter().any(|s| s == name) {
                self.check_expr(&Expr { kind: ExprKind::Name(name.to_string()), span });
            }
            if !self.assigned.iter().any(|s| s == name) {
                self.assigned.push(name.to_string());
            }
        }
        let (Some(target), Some(vty)) = (entry.ty, vty) else { return };
        self.note_broadcast(&target.shape, &vty.shape, value.span);
        let result = if op == AssignOp::Set {
            types::broadcast(&target.shape, &vty.shape)
        } else {
            if vty.elem != Elem::Num || target.elem != Elem::Num {
                self.error(
                    Diagnostic::error("E0014", "compound assignment needs numbers", stmt_span)
                        .label("not a number")
                        .hint("use `=` for bools"),
                );
                return;
            }
            types::broadcast(&target.shape, &vty.shape)
        };
        match result {
            Ok(shape) if shape == target.shape && vty.elem == target.elem => {}
            Ok(_) | Err(_) if vty.elem != target.elem => {
                self.error(
                    Diagnostic::error("E0014", format!("`{name}` is {target}, but the value is {vty}"), value.span)
                        .label(format!("this is {vty}"))
                        .note(entry.span, "declared here"),
                );
            }
            _ => {
                let code = if target.is_scalar() != vty.is_scalar() { "E0004" } else { "E0005" };
                let msg = if target.is_scalar() {
                    format!("`{name}` is a scalar, but the value has shape {}", vty.shape)
                } else {
                    format!("`{name}` has shape {}, but the value has shape {}", target.shape, vty.shape)
                };
                self.error(
                    Diagnostic::error(code, msg, value.span)
                        .label(format!("shape {}", vty.shape))
                        .note(entry.span, "declared here")
                        .hint(if vty.is_scalar() || target.is_scalar() {
                            "a scalar cannot hold a tensor: reduce it (`sum`, `norm`, ...) first"
                        } else {
                            "a value keeps its shape: reduce with `axis =`, or transpose with `.T`"
                        }),
                );
            }
        }
    }

    /// A `for` bound: an integer literal, or (for the end) an `int` hyperparameter with a
    /// range, whose upper end bounds the unrolled loop.
    fn check_static_bound(&mut self, e: &Expr, end: bool) {
        match &e.kind {
            ExprKind::Number(v) if v.fract() == 0.0 && *v <= MAX_UNROLL => {}
            ExprKind::Number(v) if v.fract() == 0.0 => self.too_many_iterations(e, *v),
            ExprKind::Name(n) if end => {
                let hyper = self.file.optimizers.first().and_then(|o| o.hypers.iter().find(|h| &h.name.name == n));
                match (self.lookup(n).map(|e| e.entity), hyper) {
                    (Some(Entity::Hyper { int: true, .. }), Some(h)) => match h.range.as_ref().map(|(_, hi)| literal(hi)) {
                        Some(Some(Ok(hi))) if hi > MAX_UNROLL => self.too_many_iterations(e, hi),
                        Some(_) => {}
                        None => self.error(
                            Diagnostic::error("E0015", format!("the loop bound `{n}` needs a range"), e.span)
                                .label("no upper limit known")
                                .hint(format!("declare it as `hyper {n}: int = ... in 0..=10`: loops are unrolled up to the range's end")),
                        ),
                    },
                    // Static at every call: `check_user_call` checks the arguments.
                    (Some(Entity::FnParam { int: true }), _) => self.record_loop_bound(n),
                    _ => self.not_static(e),
                }
            }
            _ => self.not_static(e),
        }
    }

    /// Records that parameter `name` of the function being checked bounds a loop, so every
    /// call must pass a static value for it.
    fn record_loop_bound(&mut self, name: &str) {
        let Some(current) = self.current_fn.clone() else { return };
        let index = self
            .file
            .fns
            .iter()
            .find(|f| f.name.name == current)
            .and_then(|f| f.params.iter().position(|p| p.name.name == name));
        if let Some(i) = index {
            let entry = self.loop_bound_params.entry(current).or_default();
            if !entry.contains(&i) {
                entry.push(i);
            }
        }
    }

    /// Whether an argument for an `int` parameter that bounds a loop is known when compiling:
    /// a whole-number literal, a ranged `int` hyperparameter, or such a parameter itself.
    pub(crate) fn is_static_bound(&mut self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Number(v) => v.fract() == 0.0 && *v >= 0.0 && *v <= MAX_UNROLL,
            ExprKind::Name(n) => {
                let ranged = self
                    .file
                    .optimizers
                    .first()
                    .and_then(|o| o.hypers.iter().find(|h| &h.name.name == n))
                    .is_some_and(|h| h.range.is_some());
                match self.scopes.iter().rev().find_map(|s| s.get(n)).map(|e| e.entity.clone()) {
                    Some(Entity::Hyper { int: true, .. }) => ranged,
                    // Passed on to a loop: the enclosing function's callers must pass a static
                    // value too.
                    Some(Entity::FnParam { int: true }) => {
                        self.record_loop_bound(n);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    fn too_many_iterations(&mut self, e: &Expr, n: f64) {
        self.error(
            Diagnostic::error("E0015", format!("a loop is unrolled, and {n} iterations are too many"), e.span)
                .label(format!("more than {MAX_UNROLL}"))
                .hint("loops are unrolled when compiling; keep them short, or use `every` to spread work over steps"),
        );
    }

    fn not_static(&mut self, e: &Expr) {
        // An unknown name in the bound is reported as such, and once.
        if self.check_expr(e).is_none() {
            return;
        }
        self.error(
            Diagnostic::error("E0015", "a loop bound must be known when compiling", e.span)
                .label("not a whole-number literal or a ranged `int` hyperparameter")
                .hint("write `for i in 0..5`, or bound it by `hyper n: int = 5 in 0..=10`"),
        );
    }

    /// Checks `every`'s period or phase (`what`): a positive whole-number literal, or an
    /// `int` hyperparameter that cannot be below 1.
    fn check_every_period(&mut self, e: &Expr, what: &str) {
        let bad = |this: &mut Self, msg: String, label: &str| {
            this.error(
                Diagnostic::error("E0010", msg, e.span)
                    .label(label.to_string())
                    .hint("`every K { ... }` runs on steps 1, K+1, 2K+1, ..., `every K at P { ... }` on steps P, P+K, P+2K, ...; K and P are positive integer literals or `int` hyperparameters"),
            );
        };
        let number = |e: &Expr| literal(e).and_then(Result::ok);
        if let Some(v) = number(e) {
            if v < 1.0 || v.fract() != 0.0 {
                bad(self, format!("`every` needs a positive integer {what}, found {v}"), "not a positive integer");
            } else if v > MAX_PERIOD {
                bad(
                    self,
                    format!("`every` {what} {v} is more than {MAX_PERIOD} steps: the block would run at most once"),
                    "too long a period",
                );
            }
            return;
        }
        if let ExprKind::Name(n) = &e.kind {
            let hyper = self.file.optimizers.first().and_then(|o| o.hypers.iter().find(|h| &h.name.name == n)).cloned();
            match (self.lookup(n).map(|x| x.entity), hyper) {
                (Some(Entity::Hyper { int: true, .. }), Some(h)) => {
                    let lowest = h.range.as_ref().and_then(|(lo, _)| number(lo)).or_else(|| number(&h.default));
                    if lowest.is_some_and(|v| v < 1.0) {
                        bad(
                            self,
                            format!("the {what} `{n}` can be {}", lowest.unwrap_or(0.0)),
                            "may be zero or negative",
                        );
                    }
                }
                (Some(Entity::Hyper { .. }), _) => {
                    bad(self, format!("the {what} `{n}` must be an `int` hyperparameter"), "not an int")
                }
                (None, _) => {
                    self.check_expr(e);
                }
                _ => bad(
                    self,
                    format!("`every` needs a {what} known before the step"),
                    "not a literal or hyperparameter",
                ),
            }
            return;
        }
        self.check_expr(e);
        bad(
            self,
            format!("`every` needs a positive integer literal or an `int` hyperparameter as its {what}"),
            "an expression",
        );
    }
}

/// The optional inputs that `cond` proves present when it evaluates to `holds`:
/// `present(h)`, conjunctions of it, and their negations (`if !present(h) { } else { h }`).
fn present_in(cond: &Expr, holds: bool) -> Vec<String> {
    match &cond.kind {
        ExprKind::Call(name, args) if holds && name.name == "present" && args.len() == 1 => match &args[0].value.kind {
            ExprKind::Name(n) => vec![n.clone()],
            _ => Vec::new(),
        },
        ExprKind::Binary(crate::ast::BinOp::And, a, b) if holds => {
            let mut v = present_in(a, true);
            v.extend(present_in(b, true));
            v
        }
        ExprKind::Binary(crate::ast::BinOp::Or, a, b) if !holds => {
            let mut v = present_in(a, false);
            v.extend(present_in(b, false));
            v
        }
        ExprKind::Unary(crate::ast::UnOp::Not, x) => present_in(x, !holds),
        _ => Vec::new(),
    }
}
