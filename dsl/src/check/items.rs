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
                let mut d = Diagnostic::error(
                    "E0016",
                    format!("function `{}` does not end with `return`", f.name.name),
                    f.name.span,
                )
                .label("its body must end with `return value`")
                .hint("a function computes one value: end the body with `return value`");
                if let Some(last) = f.body.stmts.last() {
                    d = d.note(last.span(), "the last statement");
                }
                self.error(d);
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
        if let Some(pos) = self.in_progress.iter().position(|n| *n == name) {
            let through: Vec<String> = self.in_progress[pos + 1..].iter().map(|n| format!("`{n}`")).collect();
            let msg = if through.is_empty() {
                format!("function `{name}` calls itself")
            } else {
                format!("function `{name}` calls itself through {}", through.join(", "))
            };
            self.error(
                Diagnostic::error("E0011", msg, call)
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
            let int = matches!(p.ty, Some(TypeExpr::Scalar(ScalarTy::Int, _)));
            self.declare(&p.name.name, p.name.span, Entity::FnParam { int }, param_type(p));
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
                        Diagnostic::error(
                            "E0016",
                            format!(
                                "`{name}` returns {}, but its signature says {}",
                                fn_ty_text(&actual),
                                fn_ty_text(&want)
                            ),
                            span,
                        )
                        .label(format!("this is {}", fn_ty_text(&actual)))
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
                    self.scopes
                        .last_mut()
                        .expect("scope")
                        .insert(n.name.clone(), super::Entry { entity: Entity::Let, ty, span: n.span, used: true });
                }
            }
            Stmt::Var { name, value, .. } => {
                let ty = self.check_expr(value);
                self.scopes
                    .last_mut()
                    .expect("scope")
                    .insert(name.name.clone(), super::Entry { entity: Entity::Var, ty, span: name.span, used: true });
            }
            _ => {}
        }
        self.diags.truncate(before);
    }

    pub(crate) fn check_optimizer(&mut self, opt: &Optimizer) {
        self.scopes = vec![HashMap::new()];
        self.declare_quietly("step", Span::default(), Entity::Step, Some(Ty::NUM));
        self.push();
        for h in &opt.hypers {
            if self.check_precision_hyper(h) {
                self.declare(&h.name.name, h.name.span, Entity::PrecisionHyper, None);
                continue;
            }
            let ty = self.check_hyper(h);
            let int = matches!(h.ty, Some((ScalarTy::Int, _)));
            self.declare(&h.name.name, h.name.span, Entity::Hyper { int, optional: h.optional }, ty);
        }
        for gl in &opt.globals {
            self.check_global(gl);
            self.declare(&gl.name.name, gl.name.span, Entity::Global, Some(Ty::NUM));
        }
        // State names live beside hypers and globals: declared here for duplicate detection,
        // and typed with the parameter's shape inside each update. A state with a bad shape
        // has no type, which silences follow-on errors.
        let mut state_tys = Vec::new();
        let mut declared = Vec::new();
        for s in &opt.states {
            let ty = self.check_state(s);
            state_tys.push(ty.clone());
            self.declare(&s.name.name, s.name.span, Entity::State { initialised: s.init.is_some() }, ty);
            let scope = self.scopes.last().expect("the optimizer scope");
            declared.push(scope.get(&s.name.name).is_some_and(|e| e.span == s.name.span));
        }
        self.input_dims.clear();
        for i in &opt.inputs {
            let ty = self.check_input(i);
            self.declare(&i.name.name, i.name.span, Entity::Input { optional: i.optional }, ty);
        }
        let prepare_lets = self.check_prepare(opt);
        self.check_updates(opt, &state_tys, &prepare_lets);
        for i in &opt.inputs {
            let scope = self.scopes.last().expect("the optimizer scope");
            let read = scope.get(&i.name.name).is_none_or(|e| e.used || e.span != i.name.span);
            if !read {
                self.error(
                    Diagnostic::warning("W0009", format!("input `{}` is never read", i.name.name), i.name.span)
                        .label("declared here, never read")
                        .hint("remove it: the training code would collect it for nothing"),
                );
            }
        }
        // A state that could not be declared (a duplicate name) was reported already.
        for s in opt.states.iter().zip(declared).filter_map(|(s, ok)| ok.then_some(s)) {
            if !self.used_state.contains(&s.name.name) {
                self.error(
                    Diagnostic::warning("W0008", format!("state `{}` is never used", s.name.name), s.name.span)
                        .label("declared here, never read or assigned")
                        .hint("remove it: unused state still costs memory for every parameter"),
                );
            }
        }
    }

    /// A global starts at a number literal; only `prepare` changes it.
    fn check_global(&mut self, gl: &crate::ast::GlobalDecl) {
        let problem = match literal(&gl.init) {
            Some(Ok(v)) if fits_f32(v) => return,
            Some(Ok(_)) => ("too large", "f32 holds values up to about 3.4e38".to_string()),
            Some(Err(_)) => ("a bool", "globals are f32 scalars; keep a flag as `1` or `0`".to_string()),
            None => (
                "not a literal",
                format!(
                    "start it at a number such as `global {} = 1`, and compute its value in `prepare {{ ... }}`",
                    gl.name.name
                ),
            ),
        };
        self.error(
            Diagnostic::error(
                "E0019",
                format!("the initial value of global `{}` must be a number literal", gl.name.name),
                gl.init.span,
            )
            .label(problem.0)
            .hint(problem.1),
        );
    }

    /// Checks a state's shape and initialiser; returns its type (`None` if the shape is bad).
    /// Every `...` in a shape: only `update(p: [..., rows, cols], g)` (and its gradient's
    /// type, when written the same) takes one, first (`E0024`).
    pub(crate) fn check_ellipses(&mut self) {
        let file = self.file;
        let misplaced = |se: &crate::ast::ShapeExpr| se.ellipses.iter().map(|(_, s)| *s).collect::<Vec<_>>();
        fn shape_of(t: &Option<TypeExpr>) -> Option<&crate::ast::ShapeExpr> {
            match t {
                Some(TypeExpr::Shape(se)) => Some(se),
                _ => None,
            }
        }
        let mut found: Vec<(Span, &'static str, &'static str)> = Vec::new();
        for f in &file.fns {
            for se in f.params.iter().filter_map(|p| shape_of(&p.ty)).chain(shape_of(&f.ret)) {
                for span in misplaced(se) {
                    found.push((
                        span,
                        "in a function's type",
                        "a function sees one matrix at a time: drop `...` and write `[r, c]`",
                    ));
                }
            }
        }
        for opt in &file.optimizers {
            for se in opt.states.iter().filter_map(|s| s.shape.as_ref()) {
                for span in misplaced(se) {
                    found.push((
                        span,
                        "in a state shape",
                        "each matrix of a batched parameter has its own state: drop `...` (`[rows, rows]` is one matrix's)",
                    ));
                }
            }
            for u in &opt.updates {
                let param = shape_of(&u.param.ty);
                let batched = param.is_some_and(|se| se.is_batched());
                if let Some(se) = param {
                    let names: Vec<&str> = se.dims.iter().map(|d| d.name.as_str()).collect();
                    for (k, (at, span)) in se.ellipses.iter().enumerate() {
                        if k > 0 {
                            found.push((
                                *span,
                                "a second `...`",
                                "one leading `...` stands for every batch dimension: drop this one",
                            ));
                        } else if *at != 0 {
                            found.push((
                                *span,
                                "not the first dimension",
                                "write `...` first: `update(p: [..., rows, cols], g)`",
                            ));
                        } else if names == ["rows"] {
                            found.push((
                                *span,
                                "a batch of vectors",
                                "`...` batches matrices: write `update(p: [..., rows, cols], g)`, or `update(p: [rows], g)` for vectors",
                            ));
                        }
                    }
                }
                if let Some(gs) = shape_of(&u.grad.ty) {
                    let same = batched
                        && gs.is_batched()
                        && param.is_some_and(|ps| ps.dims.iter().map(|d| &d.name).eq(gs.dims.iter().map(|d| &d.name)));
                    if !same {
                        for span in misplaced(gs) {
                            found.push((
                                span,
                                "in the gradient's type",
                                "drop the gradient's type: it is always the parameter's",
                            ));
                        }
                    }
                }
            }
        }
        for (span, label, hint) in found {
            self.error(
                Diagnostic::error(
                    "E0024",
                    "`...` is only written first in a matrix update's parameter: `update(p: [..., rows, cols], g)`",
                    span,
                )
                .label(label)
                .hint(hint),
            );
        }
    }

    /// An input's shape: like the parameter, or at most two dimensions, each `rows`, `cols`
    /// or a dimension of the input's own (`batch`), declared here as a scalar name.
    fn check_input(&mut self, i: &crate::ast::InputDecl) -> Option<Ty> {
        let Some(se) = &i.shape else { return Some(Ty::num(Shape::Like)) };
        let mut ok = true;
        if let Some((_, span)) = se.ellipses.first() {
            ok = false;
            self.error(
                Diagnostic::error("E0020", "an input's shape cannot have `...`", *span)
                    .label("batch dimensions")
                    .hint("declare the input without a shape (like the parameter), or with named dimensions such as `[batch, cols]`"),
            );
        }
        if se.dims.is_empty() || se.dims.len() > 2 {
            ok = false;
            self.error(
                Diagnostic::error("E0020", "an input is a vector or a matrix", se.span)
                    .label(if se.dims.is_empty() { "a scalar" } else { "too many dimensions" })
                    .hint("declare `[batch, cols]`, `[rows]`, ... (at most two dimensions), or no shape for one like the parameter"),
            );
        }
        for d in &se.dims {
            if builtins::DIMS.contains(&d.name.as_str()) || self.input_dims.contains(&d.name) {
                continue;
            }
            let before = self.diags.len();
            self.declare(&d.name, d.span, Entity::InputDim, Some(Ty::NUM));
            if self.diags.len() == before {
                self.input_dims.push(d.name.clone());
            } else {
                ok = false;
            }
        }
        ok.then(|| Ty::num(Shape::from_names(se.dims.iter().map(|d| d.name.clone()).collect())))
    }

    fn check_state(&mut self, s: &crate::ast::StateDecl) -> Option<Ty> {
        if s.bf16 && s.shape.as_ref().is_some_and(|se| se.dims.is_empty() && se.ellipses.is_empty()) {
            self.error(
                Diagnostic::error("E0020", format!("scalar state `{}` cannot be bf16", s.name.name), s.name.span)
                    .label("one number per parameter")
                    .hint("bf16 storage halves a tensor's memory; a scalar state costs 4 bytes: drop `bf16`"),
            );
        }
        let shape = match &s.shape {
            None => Shape::Like,
            Some(se) => {
                let mut ok = true;
                let per_axis = se.dims.iter().any(|d| d.name == builtins::AXES);
                if per_axis && se.dims.len() > 1 {
                    ok = false;
                    self.error(
                        Diagnostic::error("E0020", "`axes` stands alone in a state shape", se.span)
                            .label("`axes` with other dimensions")
                            .hint("`state acc: [axes]` keeps one entry per index of each axis of the parameter; it has no rows or columns of its own"),
                    );
                }
                for d in &se.dims {
                    if d.name == builtins::AXES {
                        continue;
                    }
                    if !builtins::DIMS.contains(&d.name.as_str()) {
                        ok = false;
                        self.error(
                            Diagnostic::error("E0020", format!("unknown dimension `{}` in a state shape", d.name), d.span)
                                .label("not a dimension")
                                .hint("state shapes are built from `rows` and `cols`: `[rows]`, `[cols]`, `[rows, rows]`, `[cols, cols]`, `[rows, cols]`, `[]` for a scalar, or `[axes]` for one entry per index of each axis"),
                        );
                    }
                }
                if se.dims.len() > 2 {
                    ok = false;
                    self.error(
                        Diagnostic::error("E0020", "state shapes have at most two dimensions", se.span)
                            .label("too many dimensions")
                            .hint("use `[rows, cols]` for a matrix; a parameter of higher rank is viewed as [rows, cols] with cols the product of the other dimensions"),
                    );
                }
                if !ok {
                    return None;
                }
                Shape::from_names(se.dims.iter().map(|d| d.name.clone()).collect())
            }
        };
        let ty = Ty::num(shape.clone());
        let Some(init) = &s.init else { return Some(ty) };
        self.ctx = Ctx::Init;
        self.init_shape = Some(shape.clone());
        self.push();
        let param_shape = if matches!(shape, Shape::Dims(_)) { Shape::dims(&["rows", "cols"]) } else { Shape::Like };
        self.declare_quietly("p", Span::default(), Entity::Param, Some(Ty::num(param_shape)));
        for n in builtins::SHAPE_SCALARS {
            self.declare_quietly(n, Span::default(), Entity::ShapeScalar, Some(Ty::NUM));
        }
        if let Some(ity) = self.check_expr(init) {
            let fits = types::broadcast(&shape, &ity.shape).is_ok_and(|b| b == shape);
            let name = &s.name.name;
            let hint = "initialise with `zeros`, a number, a hyperparameter, `p` (a copy of the parameter), `eye` (square shapes), or an expression of these";
            if ity.elem != ty.elem {
                self.error(
                    Diagnostic::error(
                        "E0014",
                        format!("state `{name}` holds numbers, but its initial value is {ity}"),
                        init.span,
                    )
                    .label(format!("this is {ity}"))
                    .hint(hint),
                );
            } else if !fits {
                let code = if shape == Shape::Scalar || ity.is_scalar() { "E0004" } else { "E0005" };
                self.error(
                    Diagnostic::error(
                        code,
                        format!("state `{name}` has shape {shape}, but its initial value has shape {}", ity.shape),
                        init.span,
                    )
                    .label(format!("shape {}", ity.shape))
                    .hint(hint),
                );
            }
        }
        self.pop();
        self.init_shape = None;
        Some(ty)
    }

    /// `prepare`: once per step, before any parameter. Its top-level `let`s and `var`s are
    /// returned, to be visible (read-only) in the updates.
    fn check_prepare(&mut self, opt: &Optimizer) -> Vec<(String, Span, Option<Ty>)> {
        let mut lets = Vec::new();
        for (i, block) in opt.prepares.iter().enumerate() {
            if i > 0 {
                let brace = Span::new(block.span.start as usize, block.span.start as usize + 1);
                self.error(
                    Diagnostic::error("E0012", "an optimizer has one `prepare` block", brace)
                        .label("a second `prepare` block")
                        .note(opt.prepares[0].span, "the first one")
                        .hint("merge the blocks"),
                );
                continue;
            }
            self.ctx = Ctx::Prepare;
            self.assigned.clear();
            self.push();
            for stmt in &block.stmts {
                if let Stmt::Return { span, value } = stmt {
                    self.error(
                        Diagnostic::error("E0016", "`return` must be the last statement of a function", *span)
                            .label("outside a function")
                            .hint("`prepare` assigns globals and binds values with `let`; the updates read them"),
                    );
                    self.check_expr(value);
                    continue;
                }
                self.check_stmt(stmt);
            }
            let scope = self.scopes.last().expect("the prepare scope");
            for stmt in &block.stmts {
                let names: Vec<&crate::ast::Ident> = match stmt {
                    Stmt::Let { names, .. } => names.iter().collect(),
                    Stmt::Var { name, .. } => vec![name],
                    _ => Vec::new(),
                };
                for n in names {
                    // Only names this statement declared (not a duplicate it failed to).
                    if let Some(e) = scope.get(&n.name).filter(|e| e.span == n.span) {
                        lets.push((n.name.clone(), n.span, e.ty.clone()));
                    }
                }
            }
            self.pop();
        }
        lets
    }

    fn check_updates(
        &mut self,
        opt: &Optimizer,
        state_tys: &[Option<Ty>],
        prepare_lets: &[(String, Span, Option<Ty>)],
    ) {
        if opt.updates.is_empty() {
            self.error(
                Diagnostic::error("E0017", format!("optimizer `{}` has no `update`", opt.name.name), opt.name.span)
                    .label("nothing to run")
                    .hint("add `update(p, g) { ... }`, or `update(p: [rows, cols], g) { ... }` for matrices"),
            );
        }
        let mut seen: Vec<(usize, Span, bool)> = Vec::new();
        for u in &opt.updates {
            let dims = match &u.param.ty {
                None | Some(TypeExpr::AnyTensor(_)) => 0,
                Some(TypeExpr::Shape(s)) if s.dims.iter().map(|d| d.name.as_str()).eq(["rows"]) => 1,
                Some(TypeExpr::Shape(s)) if s.dims.iter().map(|d| d.name.as_str()).eq(["rows", "cols"]) => 2,
                Some(other) => {
                    self.error(
                        Diagnostic::error(
                            "E0017",
                            "an update's parameter is `p` (any shape), `p: [rows]` (vectors) or `p: [rows, cols]` (matrices)",
                            other.span(),
                        )
                        .label("not an update pattern")
                        .hint("write `update(p, g)`, `update(p: [rows], g)` or `update(p: [rows, cols], g)`"),
                    );
                    continue;
                }
            };
            let pattern_dims: &[&str] = &["rows", "cols"][..dims];
            let grad_fits = match &u.grad.ty {
                None | Some(TypeExpr::AnyTensor(_)) => true,
                Some(TypeExpr::Shape(gs)) => {
                    dims > 0 && gs.dims.iter().map(|d| d.name.as_str()).eq(pattern_dims.iter().copied())
                }
                Some(TypeExpr::Scalar(..)) => false,
            };
            if !grad_fits {
                let gty = u.grad.ty.as_ref().expect("a declared type");
                self.error(
                    Diagnostic::error("E0005", "the gradient has the parameter's shape", gty.span())
                        .label("differs from the parameter's")
                        .hint("drop the gradient's type: it is always the parameter's"),
                );
            }
            // `update` itself: the bodies are long, so point at the keyword.
            let head =
                |u: &crate::ast::UpdateDef| Span::new(u.span.start as usize, u.span.start as usize + "update".len());
            let batched = matches!(&u.param.ty, Some(TypeExpr::Shape(s)) if s.is_batched());
            if let Some((_, prev, prev_batched)) = seen.iter().find(|(m, _, _)| *m == dims) {
                let what = if dims == 2 && (batched || *prev_batched) {
                    "matrix update (`update(p: [rows, cols], g)` or `update(p: [..., rows, cols], g)`)"
                } else {
                    ["`update(p, g)`", "`update(p: [rows], g)`", "`update(p: [rows, cols], g)`"][dims]
                };
                self.error(
                    Diagnostic::error("E0017", format!("a second {what}"), head(u))
                        .label("a second update for the same parameters")
                        .note(*prev, "the first one")
                        .hint("an optimizer has at most one update per pattern; a parameter takes the most specific one that fits it"),
                );
                continue;
            }
            seen.push((dims, head(u), batched));
            self.ctx = Ctx::Update { dims };
            self.assigned.clear();
            self.per_param.clear();
            self.push();
            let pshape = if dims == 0 { Shape::Like } else { Shape::dims(pattern_dims) };
            for n in builtins::SHAPE_SCALARS {
                self.declare_quietly(n, Span::default(), Entity::ShapeScalar, Some(Ty::NUM));
            }
            // Checked where `prepare` declared them; a clash with `p` or `g` is reported below.
            for (name, span, ty) in prepare_lets {
                self.declare_quietly(name, *span, Entity::PrepareLet, ty.clone());
            }
            self.declare(&u.param.name.name, u.param.name.span, Entity::Param, Some(Ty::num(pshape.clone())));
            self.declare(&u.grad.name.name, u.grad.name.span, Entity::Grad, Some(Ty::num(pshape.clone())));
            // State declared like the parameter takes the update's parameter shape.
            self.set_state_types(opt, state_tys, Some(&pshape));
            self.check_block(&u.body, false);
            self.pop();
            self.set_state_types(opt, state_tys, None);
        }
    }

    /// Gives each state its type, with `like(p)` replaced by `pshape` when there is one.
    fn set_state_types(&mut self, opt: &Optimizer, state_tys: &[Option<Ty>], pshape: Option<&Shape>) {
        for (s, ty) in opt.states.iter().zip(state_tys) {
            let ty = match (ty, pshape) {
                (Some(t), Some(p)) if t.shape == Shape::Like => Some(Ty::num(p.clone())),
                _ => ty.clone(),
            };
            let entry = self.scopes.iter_mut().rev().find_map(|sc| sc.get_mut(&s.name.name));
            if let Some(e) = entry.filter(|e| matches!(e.entity, Entity::State { .. })) {
                e.ty = ty;
            }
        }
    }

    /// Whether `h` is a precision hyperparameter (`hyper ns_precision = bf16`), which has
    /// neither a type nor a range.
    fn check_precision_hyper(&mut self, h: &crate::ast::HyperDecl) -> bool {
        let ExprKind::Name(n) = &h.default.kind else { return false };
        if crate::builtins::precision_value(n).is_none() {
            return false;
        }
        let name = &h.name.name;
        if let Some((_, span)) = h.ty {
            self.error(
                Diagnostic::error("E0019", format!("`{name}` is a precision: it takes no type"), span)
                    .label("a type on a precision")
                    .hint(format!("write `hyper {name} = {n}`")),
            );
        }
        if let Some((lo, hi)) = &h.range {
            self.error(
                Diagnostic::error("E0019", format!("the precision `{name}` cannot have a range"), lo.span.to(hi.span))
                    .label("a range on a precision")
                    .hint("a precision is `bf16`, `tf32` or `f32`; drop `in ...`"),
            );
        }
        true
    }

    /// A hyperparameter's default and range are literals of its type.
    fn check_hyper(&mut self, h: &crate::ast::HyperDecl) -> Option<Ty> {
        let name = &h.name.name;
        let not_literal = |e: &crate::ast::Expr, what: &str| {
            Diagnostic::error("E0019", format!("the {what} of `{name}` must be a literal"), e.span)
                .label("not a literal")
                .hint("hyperparameter defaults and ranges are literals such as `1e-3`, `-1`, `true`; they are set at run time, not computed")
        };
        let too_large = |e: &crate::ast::Expr| {
            Diagnostic::error("E0019", "this number does not fit in f32", e.span)
                .label("too large")
                .hint("write a smaller literal; f32 holds values up to about 3.4e38")
        };
        let bool_declared = matches!(h.ty, Some((ScalarTy::Bool, _))) || matches!(h.default.kind, ExprKind::Bool(_));
        if h.optional && bool_declared {
            self.error(
                Diagnostic::error("E0019", format!("the bool `{name}` cannot be optional"), h.name.span)
                    .label("a bool is set or not already")
                    .hint(format!("declare `hyper {name} = false` and test it with `if {name}`")),
            );
            return None;
        }
        if matches!(&h.default.kind, ExprKind::Name(n) if n == "none") {
            if !h.optional {
                self.error(
                    Diagnostic::error(
                        "E0019",
                        format!("`{name}` is not optional: it cannot default to `none`"),
                        h.default.span,
                    )
                    .label("unset by default")
                    .hint(format!(
                        "declare it `optional hyper {name} = none` (read under `if present({name})`), or give a value"
                    )),
                );
                return None;
            }
            return Some(Ty::NUM);
        }
        let Some(default) = literal(&h.default) else {
            self.error(not_literal(&h.default, "default"));
            return None;
        };
        if matches!(default, Ok(v) if !fits_f32(v)) {
            self.error(too_large(&h.default));
            return None;
        }
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
                    Diagnostic::error(
                        "E0019",
                        format!("`{name}` is declared {tname}, but its default is not"),
                        h.default.span,
                    )
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
            let range_span = lo.span.to(hi.span);
            let bound = |this: &mut Self, e: &crate::ast::Expr| -> Option<f64> {
                match literal(e) {
                    None => this.error(not_literal(e, "range")),
                    Some(Ok(v)) if !fits_f32(v) => this.error(too_large(e)),
                    Some(Ok(v)) if ty == ScalarTy::Int && v.fract() != 0.0 => this.error(
                        Diagnostic::error(
                            "E0019",
                            format!("the range of the int `{name}` must hold whole numbers"),
                            e.span,
                        )
                        .label("not a whole number")
                        .hint("write the range as `in 0..=10`"),
                    ),
                    Some(Ok(v)) => return Some(v),
                    Some(Err(_)) => this.error(
                        Diagnostic::error("E0019", format!("the range of `{name}` must hold numbers"), e.span)
                            .label("a bool")
                            .hint("write the range as `in lo..=hi` with numbers"),
                    ),
                }
                None
            };
            if ty == ScalarTy::Bool {
                self.error(
                    Diagnostic::error("E0019", format!("the bool `{name}` cannot have a range"), range_span)
                        .label("a range on a bool")
                        .hint("ranges are for f32 and int hyperparameters; drop `in ...`"),
                );
            } else if let (Some(l), Some(u), Ok(d)) = (bound(self, lo), bound(self, hi), default) {
                if l > u {
                    self.error(
                        Diagnostic::error("E0019", format!("the range {l}..={u} of `{name}` is empty"), range_span)
                            .label("the low end is above the high end")
                            .hint("write the range as `in lo..=hi` with lo <= hi"),
                    );
                } else if d < l || d > u {
                    self.error(
                        Diagnostic::error(
                            "E0019",
                            format!("the default {d} of `{name}` is outside its range {l}..={u}"),
                            h.default.span,
                        )
                        .label(format!("not in {l}..={u}"))
                        .note(range_span, "the range")
                        .hint("the default must lie in the range: lo <= default <= hi"),
                    );
                }
            }
        }
        Some(if ty == ScalarTy::Bool { Ty::BOOL } else { Ty::NUM })
    }
}

/// A type as a function signature writes it: the shape shared by `tensor` parameters is
/// `tensor`, not the parameter's shape.
fn fn_ty_text(ty: &Ty) -> String {
    match (&ty.shape, ty.elem) {
        (Shape::Like, types::Elem::Num) => "tensor".to_string(),
        (Shape::Like, types::Elem::Bool) => "bool tensor".to_string(),
        _ => ty.to_string(),
    }
}

/// The value of a literal: a number (possibly negated) or a bool.
pub(crate) fn literal(e: &crate::ast::Expr) -> Option<Result<f64, bool>> {
    match &e.kind {
        ExprKind::Number(v) => Some(Ok(*v)),
        ExprKind::Bool(b) => Some(Err(*b)),
        ExprKind::Unary(UnOp::Neg, inner) => match inner.kind {
            ExprKind::Number(v) => Some(Ok(-v)),
            _ => None,
        },
        _ => None,
    }
}

/// True when a number survives the conversion to f32 (every value reaches a kernel as f32).
pub(crate) fn fits_f32(v: f64) -> bool {
    v.abs() <= f64::from(f32::MAX)
}
