//! Checking the top level: functions (types, returns, recursion), hyperparameters (literal
//! defaults, types, ranges), globals, state (shapes, initialisers), `prepare`, the update
//! patterns, and unused state.

use super::expr::param_type;
use super::{Checker, Ctx, Entity};
use crate::ast::{ExprKind, FnDef, Optimizer, ScalarTy, Stmt, TypeExpr, UnOp};
use crate::builtins;
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use crate::types::{self, Shape, Ty};
use std::collections::HashMap;

impl Checker<'_> {
    pub(crate) fn check_fns(&mut self) {
        let file = self.file;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for f in &file.fns {
            if let Some(prev) = seen.get(f.name.name.as_str()) {
                self.error(
                    Diagnostic::error("E0012", format!("function `{}` is already defined", f.name.name), f.name.span)
                        .label("defined again here")
                        .note(*prev, "first defined here")
                        .hint("give it another name"),
                );
            } else if builtins::function(&f.name.name).is_some() {
                self.error(
                    Diagnostic::error("E0012", format!("`{}` is a built-in function", f.name.name), f.name.span)
                        .label("shadows a built-in")
                        .hint("give it another name"),
                );
            }
            seen.entry(&f.name.name).or_insert(f.name.span);
            for p in &f.params {
                if p.ty.is_none() {
                    self.error(
                        Diagnostic::error("E0021", format!("parameter `{}` needs a type", p.name.name), p.span)
                            .label("no type")
                            .hint("write `x: f32`, `n: int`, `c: bool`, `x: tensor` (any shape) or `x: [r, c]`"),
                    );
                }
            }
            if !matches!(f.body.stmts.last(), Some(Stmt::Return { .. })) {
                self.error(
                    Diagnostic::error("E0016", format!("function `{}` does not end with `return`", f.name.name), f.span)
                        .label("no `return` at the end")
                        .hint("end the body with `return value`"),
                );
            }
        }
        for f in &file.fns {
            self.fn_return_type(f, f.name.span);
        }
    }

    /// Checks a function's body once, in a scope of its own, and returns the type of its
    /// `return` (memoised). A call that reaches a function being checked is recursion.
    pub(crate) fn fn_return_type(&mut self, f: &FnDef, call: Span) -> Option<Ty> {
        let name = f.name.name.clone();
        if self.in_progress.contains(&name) {
            self.error(
                Diagnostic::error("E0011", format!("function `{name}` calls itself"), call)
                    .label("recursive call")
                    .note(f.name.span, "defined here")
                    .hint("functions are inlined, so they cannot recurse; use a `for` loop with a fixed count"),
            );
            return None;
        }
        if let Some(r) = self.fn_returns.get(&name) {
            return r.clone();
        }
        self.in_progress.push(name.clone());
        let saved_scopes = std::mem::replace(&mut self.scopes, vec![HashMap::new()]);
        let saved_ctx = std::mem::replace(&mut self.ctx, Ctx::Fn);
        let saved_fn = self.current_fn.replace(name.clone());
        let saved_assigned = std::mem::take(&mut self.assigned);
        for p in &f.params {
            self.declare(&p.name.name, p.name.span, Entity::FnParam, param_type(p));
        }
        let errors_before = self.diags.iter().filter(|d| d.is_error()).count();
        self.check_block(&f.body, true);
        let ret = match f.body.stmts.last() {
            Some(Stmt::Return { value, .. }) => {
                // The `return` was checked inside the block's scope; check its type again in
                // the function's scope with the block's bindings, recorded by `check_block`.
                self.push();
                for s in &f.body.stmts[..f.body.stmts.len() - 1] {
                    self.rebind_quietly(s);
                }
                let before = self.diags.len();
                let ty = self.check_expr(value);
                self.diags.truncate(before);
                self.pop();
                ty
            }
            _ => None,
        };
        let ret = match (&f.ret, ret) {
            (Some(declared), Some(actual)) => {
                let want = match declared {
                    TypeExpr::Scalar(ScalarTy::Bool, _) => Ty::BOOL,
                    TypeExpr::Scalar(_, _) => Ty::NUM,
                    TypeExpr::AnyTensor(_) => Ty::num(Shape::Like),
                    TypeExpr::Shape(s) => Ty::num(Shape::from_names(s.dims.iter().map(|d| d.name.clone()).collect())),
                };
                if want != actual {
                    let span = match f.body.stmts.last() {
                        Some(Stmt::Return { value, .. }) => value.span,
                        _ => f.span,
                    };
                    self.error(
                        Diagnostic::error("E0016", format!("`{name}` returns {actual}, but its signature says {want}"), span)
                            .label(format!("this is {actual}"))
                            .note(declared.span(), "declared return type")
                            .hint("change the declared type or the returned value"),
                    );
                    None
                } else {
                    Some(want)
                }
            }
            (None, r) => r,
            (Some(_), None) => None,
        };
        let had_errors = self.diags.iter().filter(|d| d.is_error()).count() > errors_before;
        self.scopes = saved_scopes;
        self.ctx = saved_ctx;
        self.current_fn = saved_fn;
        self.assigned = saved_assigned;
        self.in_progress.pop();
        let ret = if had_errors { None } else { ret };
        self.fn_returns.insert(name, ret.clone());
        ret
    }

    /// Re-declares the bindings of a top-level statement without reporting anything, so the
    /// final `return` can be typed in the function's scope.
    fn rebind_quietly(&mut self, s: &Stmt) {
        let before = self.diags.len();
        match s {
            Stmt::Let { names, value, .. } if names.len() == 1 => {
                let ty = self.check_expr(value);
                self.scopes.last_mut().expect("scope").insert(
                    names[0].name.clone(),
                    super::Entry { entity: Entity::Let, ty, span: names[0].span, used: true },
                );
            }
            Stmt::Let { names, value: crate::ast::Expr { kind: ExprKind::Tuple(items), .. }, .. } => {
                for (n, e) in names.iter().zip(items) {
                    let ty = self.check_expr(e);
                    self.scopes.last_mut().expect("scope").insert(n.name.clone(), super::Entry { entity: Entity::Let, ty, span: n.span, used: true });
                }
            }
            Stmt::Var { name, value, .. } => {
                let ty = self.check_expr(value);
                self.scopes.last_mut().expect("scope").insert(name.name.clone(), super::Entry { entity: Entity::Var, ty, span: name.span, used: true });
            }
            _ => {}
        }
        self.diags.truncate(before);
    }

    pub(crate) fn check_optimizer(&mut self, opt: &Optimizer) {
        self.scopes = vec![HashMap::new()];
        self.declare("step", Span::default(), Entity::Step, Some(Ty::NUM));
        self.push();
        for h in &opt.hypers {
            let ty = self.check_hyper(h);
            let int = matches!(h.ty, Some((ScalarTy::Int, _)));
            self.declare(&h.name.name, h.name.span, Entity::Hyper { int }, ty);
        }
        for gl in &opt.globals {
            self.ctx = Ctx::Constant;
            self.check_expr(&gl.init);
            self.declare(&gl.name.name, gl.name.span, Entity::Global, Some(Ty::NUM));
        }
        // State names live beside hypers and globals: declare them once here for duplicate
        // detection, then again in each update's own scope.
        let mut state_tys = Vec::new();
        for s in &opt.states {
            let shape = match &s.shape {
                None => Shape::Like,
                Some(se) => {
                    for d in &se.dims {
                        if !builtins::DIMS.contains(&d.name.as_str()) {
                            self.error(
                                Diagnostic::error("E0020", format!("unknown dimension `{}` in a state shape", d.name), d.span)
                                    .label("not a dimension")
                                    .hint("state shapes are built from `rows` and `cols`: `[rows]`, `[cols]`, `[rows, rows]`, `[cols, cols]`, `[rows, cols]`, or `[]` for a scalar"),
                            );
                        }
                    }
                    if se.dims.len() > 2 {
                        self.error(
                            Diagnostic::error("E0020", "state shapes have at most two dimensions", se.span)
                                .label("too many dimensions")
                                .hint("use `[rows, cols]` for a matrix"),
                        );
                    }
                    Shape::from_names(se.dims.iter().map(|d| d.name.clone()).collect())
                }
            };
            let ty = Ty::num(shape.clone());
            if let Some(init) = &s.init {
                self.ctx = Ctx::Init;
                self.init_shape = Some(shape.clone());
                self.push();
                let param_shape = if matches!(shape, Shape::Dims(_)) { Shape::dims(&["rows", "cols"]) } else { Shape::Like };
                self.declare("p", Span::default(), Entity::Param, Some(Ty::num(param_shape)));
                for n in builtins::SHAPE_SCALARS {
                    self.declare(n, Span::default(), Entity::ShapeScalar, Some(Ty::NUM));
                }
                if let Some(ity) = self.check_expr(init) {
                    let fits = types::broadcast(&shape, &ity.shape).is_ok_and(|b| b == shape);
                    if !fits || ity.elem != ty.elem {
                        self.error(
                            Diagnostic::error("E0005", format!("state `{}` has shape {shape}, but its initial value has shape {}", s.name.name, ity.shape), init.span)
                                .label(format!("shape {}", ity.shape))
                                .hint("initialise with `zeros`, a number, a hyperparameter, `p` (a copy of the parameter) or `eye` (square shapes)"),
                        );
                    }
                }
                self.pop();
                self.init_shape = None;
            }
            state_tys.push(ty.clone());
            self.declare(&s.name.name, s.name.span, Entity::State { initialised: s.init.is_some() }, Some(ty));
        }
        // `prepare`: once per step; its top-level `let`s are visible to the updates.
        let mut prepare_lets = Vec::new();
        for (i, block) in opt.prepares.iter().enumerate() {
            if i > 0 {
                self.error(
                    Diagnostic::error("E0012", "an optimizer has one `prepare` block", block.span)
                        .label("a second `prepare`")
                        .hint("merge the blocks"),
                );
                continue;
            }
            self.ctx = Ctx::Prepare;
            self.push();
            for stmt in &block.stmts {
                if let Stmt::Return { span, .. } = stmt {
                    self.error(
                        Diagnostic::error("E0016", "`return` must be the last statement of a function", *span)
                            .label("outside a function")
                            .hint("`prepare` assigns globals and binds values with `let`"),
                    );
                    continue;
                }
                self.check_block(&crate::ast::Block { stmts: vec![stmt.clone()], span: block.span }, false);
                self.rebind_top(stmt, &mut prepare_lets);
            }
            self.pop();
        }
        self.check_updates(opt, &state_tys, &prepare_lets);
        for s in &opt.states {
            if !self.used_state.contains(&s.name.name) {
                self.error(
                    Diagnostic::warning("W0008", format!("state `{}` is never used", s.name.name), s.name.span)
                        .label("declared here, never read or assigned")
                        .hint("remove it: unused state still costs memory for every parameter"),
                );
            }
        }
    }

    /// Records a `prepare` statement's bindings so they stay visible after its block.
    fn rebind_top(&mut self, stmt: &Stmt, lets: &mut Vec<(String, Span, Option<Ty>)>) {
        let before = self.diags.len();
        match stmt {
            Stmt::Let { names, value, .. } if names.len() == 1 => {
                let ty = self.check_expr(value);
                lets.push((names[0].name.clone(), names[0].span, ty.clone()));
                self.scopes.last_mut().expect("scope").insert(names[0].name.clone(), super::Entry { entity: Entity::Let, ty, span: names[0].span, used: true });
            }
            Stmt::Let { names, value: crate::ast::Expr { kind: ExprKind::Tuple(items), .. }, .. } => {
                for (n, e) in names.iter().zip(items) {
                    let ty = self.check_expr(e);
                    lets.push((n.name.clone(), n.span, ty.clone()));
                    self.scopes.last_mut().expect("scope").insert(n.name.clone(), super::Entry { entity: Entity::Let, ty, span: n.span, used: true });
                }
            }
            Stmt::Var { name, value, .. } => {
                let ty = self.check_expr(value);
                lets.push((name.name.clone(), name.span, ty.clone()));
                self.scopes.last_mut().expect("scope").insert(name.name.clone(), super::Entry { entity: Entity::Var, ty, span: name.span, used: true });
            }
            _ => {}
        }
        self.diags.truncate(before);
    }

    fn check_updates(&mut self, opt: &Optimizer, state_tys: &[Ty], prepare_lets: &[(String, Span, Option<Ty>)]) {
        if opt.updates.is_empty() {
            self.error(
                Diagnostic::error("E0017", format!("optimizer `{}` has no `update`", opt.name.name), opt.name.span)
                    .label("nothing to run")
                    .hint("add `update(p, g) { ... }`, or `update(p: [rows, cols], g) { ... }` for matrices"),
            );
        }
        let mut seen: Vec<(bool, Span)> = Vec::new();
        for u in &opt.updates {
            let matrix = match &u.param.ty {
                None | Some(TypeExpr::AnyTensor(_)) => false,
                Some(TypeExpr::Shape(s)) if s.dims.iter().map(|d| d.name.as_str()).eq(["rows", "cols"]) => true,
                Some(other) => {
                    self.error(
                        Diagnostic::error("E0017", "an update's parameter is `p` (any shape) or `p: [rows, cols]` (matrices)", other.span())
                            .label("not an update pattern")
                            .hint("write `update(p, g)` or `update(p: [rows, cols], g)`"),
                    );
                    continue;
                }
            };
            if let Some(TypeExpr::Shape(gs)) = &u.grad.ty {
                let pdims: Vec<&str> = if matrix { vec!["rows", "cols"] } else { vec![] };
                if !gs.dims.iter().map(|d| d.name.as_str()).eq(pdims) {
                    self.error(
                        Diagnostic::error("E0005", "the gradient has the parameter's shape", gs.span)
                            .label("differs from the parameter's")
                            .hint("drop the gradient's type: it is always the parameter's"),
                    );
                }
            }
            if let Some((_, prev)) = seen.iter().find(|(m, _)| *m == matrix) {
                self.error(
                    Diagnostic::error("E0017", "two updates for the same parameter shapes", u.span)
                        .label("a second update")
                        .note(*prev, "the first one")
                        .hint("an optimizer has at most one `update(p, g)` and one `update(p: [rows, cols], g)`; matrices take the second"),
                );
                continue;
            }
            seen.push((matrix, u.span));
            self.ctx = Ctx::Update { matrix };
            self.assigned.clear();
            self.push();
            let pshape = if matrix { Shape::dims(&["rows", "cols"]) } else { Shape::Like };
            self.declare(&u.param.name.name, u.param.name.span, Entity::Param, Some(Ty::num(pshape.clone())));
            self.declare(&u.grad.name.name, u.grad.name.span, Entity::Grad, Some(Ty::num(pshape.clone())));
            for n in builtins::SHAPE_SCALARS {
                self.declare(n, Span::default(), Entity::ShapeScalar, Some(Ty::NUM));
            }
            for (name, span, ty) in prepare_lets {
                self.declare(name, *span, Entity::PrepareLet, ty.clone());
            }
            // State declared like the parameter takes the update's parameter shape.
            for (s, ty) in opt.states.iter().zip(state_tys) {
                let ty = if ty.shape == Shape::Like { Ty::num(pshape.clone()) } else { ty.clone() };
                if let Some(scope) = self.scopes.iter_mut().rev().find(|sc| sc.contains_key(&s.name.name)) {
                    if let Some(e) = scope.get_mut(&s.name.name) {
                        e.ty = Some(ty);
                    }
                }
            }
            self.check_block(&u.body, false);
            self.pop();
            for (s, ty) in opt.states.iter().zip(state_tys) {
                if let Some(scope) = self.scopes.iter_mut().rev().find(|sc| sc.contains_key(&s.name.name)) {
                    if let Some(e) = scope.get_mut(&s.name.name) {
                        e.ty = Some(ty.clone());
                    }
                }
            }
        }
    }

    /// A hyperparameter's default and range are literals of its type.
    fn check_hyper(&mut self, h: &crate::ast::HyperDecl) -> Option<Ty> {
        let literal = |e: &crate::ast::Expr| -> Option<Result<f64, bool>> {
            match &e.kind {
                ExprKind::Number(v) => Some(Ok(*v)),
                ExprKind::Bool(b) => Some(Err(*b)),
                ExprKind::Unary(UnOp::Neg, inner) => match inner.kind {
                    ExprKind::Number(v) => Some(Ok(-v)),
                    _ => None,
                },
                _ => None,
            }
        };
        let not_literal = |e: &crate::ast::Expr| {
            Diagnostic::error("E0019", format!("the default of `{}` must be a literal", h.name.name), e.span)
                .label("not a literal")
                .hint("hyperparameter defaults and ranges are literals such as `1e-3`, `-1`, `true`; they are set at run time, not computed")
        };
        let Some(default) = literal(&h.default) else {
            self.error(not_literal(&h.default));
            return None;
        };
        let ty = match (h.ty.map(|t| t.0), default) {
            (None | Some(ScalarTy::F32), Ok(_)) => ScalarTy::F32,
            (None | Some(ScalarTy::Bool), Err(_)) => ScalarTy::Bool,
            (Some(ScalarTy::Int), Ok(v)) if v.fract() == 0.0 => ScalarTy::Int,
            (Some(t), _) => {
                let tname = match t {
                    ScalarTy::F32 => "f32",
                    ScalarTy::Int => "int",
                    ScalarTy::Bool => "bool",
                };
                self.error(
                    Diagnostic::error("E0019", format!("`{}` is declared {tname}, but its default is not", h.name.name), h.default.span)
                        .label(format!("not {tname}"))
                        .hint(match t {
                            ScalarTy::Int => "an int default is a whole number such as `5`",
                            ScalarTy::Bool => "a bool default is `true` or `false`",
                            ScalarTy::F32 => "an f32 default is a number such as `0.9`",
                        }),
                );
                return None;
            }
        };
        if let Some((lo, hi)) = &h.range {
            match (literal(lo), literal(hi), default) {
                (Some(Ok(l)), Some(Ok(u)), Ok(d)) if ty != ScalarTy::Bool => {
                    if l > u || d < l || d > u {
                        self.error(
                            Diagnostic::error("E0019", format!("the default {d} of `{}` is outside its range {l}..={u}", h.name.name), h.span)
                                .label("outside the range")
                                .hint("the range is `in lo..=hi` with lo <= default <= hi"),
                        );
                    }
                }
                (Some(_), Some(_), _) => self.error(
                    Diagnostic::error("E0019", format!("`{}` cannot have a range", h.name.name), lo.span.to(hi.span))
                        .label("range of a bool")
                        .hint("ranges are for f32 and int hyperparameters"),
                ),
                (None, _, _) => self.error(not_literal(lo)),
                (_, None, _) => self.error(not_literal(hi)),
            }
        }
        Some(if ty == ScalarTy::Bool { Ty::BOOL } else { Ty::NUM })
    }
}
