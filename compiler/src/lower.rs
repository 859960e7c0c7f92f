//! Lowering: a checked AST becomes an IR module. Functions are inlined, `for` loops
//! unrolled, `if` and `every` become guards plus `select` merges of every variable they
//! assign, state and the parameter are loaded at the start and stored at the end.
//!
//! Guards: an expensive operation (reduction, matrix product, transpose) inside a guarded
//! region carries the region's guard. An elementwise operation carries the deepest guard of
//! its arguments instead, so cheap work in a branch runs speculatively and fuses with the
//! code around it; a merge `select` only reads the side its condition picks.
//!
//! Hyperparameters are always read with `hyper` instructions: they are never folded into the
//! code, so they change at run time without recompiling.

use crate::ir::*;
use gdc_dsl::ast::{self, AssignOp, BinOp, Block, Expr, ExprKind, FnDef, Stmt, UnOp};
use gdc_dsl::types::{Shape, Ty};
use gdc_dsl::{Diagnostic, Span};
use std::collections::HashMap;

/// The most instructions one function may unroll to. Loops are unrolled, so nested loops
/// (or a loop calling a function with a loop) multiply; past this the program is refused
/// with a diagnostic instead of exhausting memory.
pub const MAX_INSTS: usize = 200_000;

/// Lowers the (single) optimizer of a checked file. The only error is a program that
/// unrolls past `MAX_INSTS` instructions.
pub fn lower(file: &ast::File) -> Result<Module, Box<Diagnostic>> {
    let opt = &file.optimizers[0];
    let hypers = opt
        .hypers
        .iter()
        .map(|h| {
            let ty = match (h.ty.map(|t| t.0), &h.default.kind) {
                (Some(ast::ScalarTy::Int), _) => HyperTy::Int,
                (Some(ast::ScalarTy::Bool), _) | (None, ExprKind::Bool(_)) => HyperTy::Bool,
                (None, ExprKind::Name(n)) if n != "none" => HyperTy::Precision,
                _ => HyperTy::F32,
            };
            HyperInfo {
                name: h.name.name.clone(),
                ty,
                default: literal_value(&h.default),
                range: h.range.as_ref().map(|(a, b)| (literal_value(a), literal_value(b))),
                optional: h.optional,
            }
        })
        .collect();
    let states = opt
        .states
        .iter()
        .map(|s| StateInfo {
            name: s.name.name.clone(),
            bf16: s.bf16,
            shape: match &s.shape {
                None => Shape::Like,
                Some(se) => Shape::from_names(se.dims.iter().map(|d| d.name.clone()).collect()),
            },
        })
        .collect();
    let globals =
        opt.globals.iter().map(|g| GlobalInfo { name: g.name.name.clone(), init: literal_value(&g.init) }).collect();
    let inputs = opt
        .inputs
        .iter()
        .map(|i| InputInfo {
            name: i.name.name.clone(),
            shape: match &i.shape {
                None => Shape::Like,
                Some(se) => Shape::from_names(se.dims.iter().map(|d| d.name.clone()).collect()),
            },
            optional: i.optional,
        })
        .collect();
    let mut module = Module {
        name: opt.name.name.clone(),
        hypers,
        states,
        inputs,
        globals,
        prepare: Func::new(FuncKind::Prepare),
        prepare_outs: Vec::new(),
        variants: Vec::new(),
        optimizers: if opt.routed.is_empty() { vec![opt.name.name.clone()] } else { opt.routed.clone() },
        routes: opt.routes.iter().map(|r| route(r, &opt.routed)).collect(),
    };

    let (prepare, outs) = {
        let mut l = Lowerer::new(file, &module, FuncKind::Prepare);
        for (i, g) in opt.globals.iter().enumerate() {
            let v = l.emit(Op::Global(i), vec![], None);
            l.bind(&g.name.name, v);
        }
        let mut names = Vec::new();
        for block in opt.prepares.iter().take(1) {
            for stmt in &block.stmts {
                l.stmt(stmt);
                match stmt {
                    Stmt::Let { names: ns, .. } => names.extend(ns.iter().map(|n| n.name.clone())),
                    Stmt::Var { name, .. } => names.push(name.name.clone()),
                    _ => {}
                }
            }
        }
        for (i, g) in opt.globals.iter().enumerate() {
            let v = l.lookup(&g.name.name);
            if l.func.inst(v).op != Op::Global(i) {
                l.emit(Op::Store(Target::Global(i)), vec![v], None);
            }
        }
        let outs: Vec<(String, Value)> = names.into_iter().map(|n| (n.clone(), l.lookup(&n))).collect();
        l.finish()?;
        (l.func, outs)
    };
    module.prepare = prepare;
    module.prepare_outs = outs;

    for u in &opt.updates {
        let pattern = match &u.param.ty {
            Some(ast::TypeExpr::Shape(s)) if s.is_batched() => Pattern::Batched,
            Some(ast::TypeExpr::Shape(s)) if s.dims.len() == 1 => Pattern::Vector,
            Some(ast::TypeExpr::Shape(_)) => Pattern::Matrix,
            _ => Pattern::Any,
        };
        let pshape = pattern.param_shape();
        let mut l = Lowerer::new(file, &module, FuncKind::Update);
        l.pshape = pshape.clone();
        let p0 = l.emit(Op::Param, vec![], Some(Ty::num(pshape.clone())));
        let g0 = l.emit(Op::Grad, vec![], Some(Ty::num(pshape.clone())));
        l.bind(&u.param.name.name, p0);
        l.bind(&u.grad.name.name, g0);
        let mut loads = Vec::new();
        for (i, s) in module.states.iter().enumerate() {
            let v = l.emit(Op::Load(i), vec![], Some(Ty::num(state_shape(&s.shape, &pshape))));
            l.bind(&s.name, v);
            loads.push(v);
        }
        for (i, (name, _)) in module.prepare_outs.iter().enumerate() {
            let ty = module.prepare.ty(module.prepare_outs[i].1).clone();
            let v = l.emit(Op::PrepareOut(i), vec![], Some(ty));
            l.bind(name, v);
        }
        // Globals are read at their value before the step; one the update assigns (the
        // checker proved its value the same for every parameter) is stored once, after
        // every parameter has run.
        let globals: Vec<Value> = (0..module.globals.len()).map(|i| l.emit(Op::Global(i), vec![], None)).collect();
        for (g, v) in module.globals.iter().zip(&globals) {
            l.bind(&g.name, *v);
        }
        l.push_scope();
        for stmt in &u.body.stmts {
            l.stmt(stmt);
        }
        l.pop_scope();
        let p_final = l.lookup(&u.param.name.name);
        if p_final != p0 {
            let v = l.fit(p_final, &pshape);
            l.emit(Op::Store(Target::Param), vec![v], None);
        }
        for (i, g) in module.globals.iter().enumerate() {
            let v = l.lookup(&g.name);
            if v != globals[i] {
                l.emit(Op::Store(Target::Global(i)), vec![v], None);
            }
        }
        let mut used = Vec::new();
        for (i, s) in module.states.iter().enumerate() {
            let v = l.lookup(&s.name);
            if v != loads[i] {
                let v = l.fit(v, &state_shape(&s.shape, &pshape));
                l.emit(Op::Store(Target::State(i)), vec![v], None);
            }
        }
        let uses = l.func.use_counts();
        for (i, load) in loads.iter().enumerate() {
            let stored = l.func.insts.iter().any(|inst| inst.op == Op::Store(Target::State(i)));
            if uses[load.index()] > 0 || stored {
                used.push(i);
            }
        }
        l.finish()?;
        let update = l.func;

        // Initialisers of the state this variant uses; state without one starts at zero.
        let mut l = Lowerer::new(file, &module, FuncKind::Init);
        let p0 = l.emit(Op::Param, vec![], Some(Ty::num(pshape.clone())));
        l.bind("p", p0);
        for i in used {
            let shape = state_shape(&module.states[i].shape, &pshape);
            l.init_shape = shape.clone();
            let v = match &opt.states[i].init {
                Some(e) => l.expr(e),
                None => l.constant(0.0),
            };
            let v = l.fit(v, &shape);
            l.emit(Op::Store(Target::State(i)), vec![v], None);
        }
        l.finish()?;
        let init = l.func;
        module.variants.push(Variant { pattern, optimizer: u.owner, init, update });
    }
    Ok(module)
}

/// A checked policy route in IR form.
fn route(r: &ast::RouteDecl, routed: &[String]) -> Route {
    let roles = r.roles.iter().filter_map(|n| Role::from_name(&n.name)).fold(0u8, |m, role| m | role.bit());
    let rank = r.shape.as_ref().map(|s| match s.dims.len() {
        _ if s.is_batched() => RankFilter::AtLeastMatrix,
        1 => RankFilter::Vector,
        _ => RankFilter::Matrix,
    });
    Route { roles, rank, optimizer: routed.iter().position(|n| *n == r.target.name).unwrap_or(0) }
}

/// The value of a literal the checker accepted as a default, range end or global's initial
/// value: a number, a negated number, or a bool (0 or 1).
fn literal_value(e: &Expr) -> f64 {
    match &e.kind {
        ExprKind::Number(v) => *v,
        ExprKind::Bool(b) => f64::from(u8::from(*b)),
        ExprKind::Unary(UnOp::Neg, inner) => -literal_value(inner),
        // `optional hyper h = none`: unset is NaN, which `present(h)` tests.
        ExprKind::Name(n) if n == "none" => f64::NAN,
        ExprKind::Name(n) => gdc_dsl::builtins::precision_value(n).unwrap_or(0.0),
        _ => 0.0,
    }
}

fn state_shape(declared: &Shape, param: &Shape) -> Shape {
    if *declared == Shape::Like {
        param.clone()
    } else {
        declared.clone()
    }
}

struct Lowerer<'a> {
    file: &'a ast::File,
    module: &'a Module,
    func: Func,
    /// Name bindings, innermost scope last.
    scopes: Vec<HashMap<String, Value>>,
    /// The guard of the current region and its nesting depth.
    guard: Option<Value>,
    depth: usize,
    guard_depth: HashMap<Value, usize>,
    /// The shape `zeros` and `eye` take in a state initialiser.
    init_shape: Shape,
    /// The update's parameter shape (what an input declared like the parameter has).
    pshape: Shape,
    /// Inside an inlined function: what each `int` parameter was given, when that is known
    /// at compile time (a literal, or the name of a ranged hyperparameter).
    static_args: HashMap<String, Expr>,
    /// The loop being unrolled when the function outgrew `MAX_INSTS`.
    too_big: Option<Span>,
    /// The precision of the products being lowered (`with precision = ...`, which reaches
    /// into the functions its block calls): a value each product takes as its third
    /// operand; `None` for float32.
    precision: Option<Value>,
}

impl<'a> Lowerer<'a> {
    fn new(file: &'a ast::File, module: &'a Module, kind: FuncKind) -> Self {
        Lowerer {
            file,
            module,
            func: Func::new(kind),
            scopes: vec![HashMap::new()],
            guard: None,
            depth: 0,
            guard_depth: HashMap::new(),
            init_shape: Shape::Scalar,
            pshape: Shape::Like,
            static_args: HashMap::new(),
            too_big: None,
            precision: None,
        }
    }

    /// Whether unrolling may go on; records the loop that outgrew the limit.
    fn room(&mut self, span: Span) -> bool {
        if self.too_big.is_none() && self.func.insts.len() > MAX_INSTS {
            self.too_big = Some(span);
        }
        self.too_big.is_none()
    }

    fn finish(&self) -> Result<(), Box<Diagnostic>> {
        match self.too_big {
            None => Ok(()),
            Some(span) => Err(Box::new(Diagnostic::error(
                "E0015",
                format!("unrolling loops and inlining functions makes the program larger than {MAX_INSTS} operations"),
                span,
            )
            .label("the limit is passed here")
            .hint("loops are unrolled and functions inlined when compiling, so nesting multiplies: shorten loops, call heavy functions fewer times, or spread the work over steps with `every`"))),
        }
    }

    fn push_scope(&mut self) {
        self.scopes.push(HashMap::new());
    }

    fn pop_scope(&mut self) {
        self.scopes.pop();
    }

    fn bind(&mut self, name: &str, v: Value) {
        self.scopes.last_mut().expect("scope").insert(name.to_string(), v);
    }

    /// Rebinds an existing name in the scope that holds it.
    fn assign(&mut self, name: &str, v: Value) {
        for scope in self.scopes.iter_mut().rev() {
            if let Some(slot) = scope.get_mut(name) {
                *slot = v;
                return;
            }
        }
        self.bind(name, v);
    }

    fn lookup(&mut self, name: &str) -> Value {
        if let Some(v) = self.scopes.iter().rev().find_map(|s| s.get(name)) {
            return *v;
        }
        if let Some(i) = self.module.hypers.iter().position(|h| h.name == name) {
            let ty = if self.module.hypers[i].ty == HyperTy::Bool { Ty::BOOL } else { Ty::NUM };
            return self.emit(Op::Hyper(i), vec![], Some(ty));
        }
        if let Some(i) = self.module.globals.iter().position(|g| g.name == name) {
            return self.emit(Op::Global(i), vec![], None);
        }
        // An input is read where it is used, under the region's guard, so a read inside
        // `if present(h)` (or `if step % k == 0`) happens only when that holds.
        if let Some(i) = self.module.inputs.iter().position(|x| x.name == name) {
            let ty = Ty::num(state_shape(&self.module.inputs[i].shape, &self.pshape));
            let guard = self.guard;
            return self.func.push(Inst { op: Op::Input(i), args: vec![], ty: Some(ty), guard });
        }
        let input_dim = self.module.inputs.iter().enumerate().find_map(|(i, x)| match &x.shape {
            Shape::Dims(d) => d.iter().position(|n| n == name).map(|axis| (i, axis)),
            _ => None,
        });
        if let Some((input, axis)) = input_dim {
            let dim = ShapeScalar::InputDim { input: input as u8, axis: axis as u8 };
            return self.emit(Op::Shape(dim), vec![], None);
        }
        match name {
            "step" => self.emit(Op::Step, vec![], None),
            "numel" => self.emit(Op::Shape(ShapeScalar::Numel), vec![], None),
            "rows" | "fan_out" => self.emit(Op::Shape(ShapeScalar::Rows), vec![], None),
            "cols" | "fan_in" => self.emit(Op::Shape(ShapeScalar::Cols), vec![], None),
            "rank" => self.emit(Op::Shape(ShapeScalar::Rank), vec![], None),
            "width_mult" => self.emit(Op::Shape(ShapeScalar::WidthMult), vec![], None),
            "inf_dims" => self.emit(Op::Shape(ShapeScalar::InfDims), vec![], None),
            "zeros" => {
                let z = self.constant(0.0);
                let shape = self.init_shape.clone();
                self.fit(z, &shape)
            }
            "eye" => {
                let shape = self.init_shape.clone();
                self.emit(Op::Eye, vec![], Some(Ty::num(shape)))
            }
            // The checker rejects unknown names; a zero keeps lowering total.
            _ => self.constant(0.0),
        }
    }

    fn constant(&mut self, c: f64) -> Value {
        self.emit(Op::Const(c), vec![], None)
    }

    /// The guard an instruction gets: see the module documentation.
    fn guard_for(&self, op: &Op, args: &[Value]) -> Option<Value> {
        if !op.is_elementwise() {
            return self.guard;
        }
        let mut best: Option<(usize, Value)> = None;
        for a in args {
            let Some(g) = self.func.inst(*a).guard else { continue };
            let d = self.guard_depth.get(&g).copied().unwrap_or(0);
            // A guard deeper than the current region belongs to a branch that has closed:
            // at its merge, the current region's guard is the one that holds.
            let (d, g) = if d > self.depth {
                match self.guard {
                    Some(cur) => (self.depth, cur),
                    None => continue,
                }
            } else {
                (d, g)
            };
            if best.is_none_or(|(bd, _)| d > bd) {
                best = Some((d, g));
            }
        }
        best.map(|(_, g)| g)
    }

    fn emit(&mut self, op: Op, args: Vec<Value>, declared: Option<Ty>) -> Value {
        let tys: Vec<&Ty> = args.iter().map(|a| self.func.ty(*a)).collect();
        let ty = match &op {
            Op::Store(_) => None,
            Op::Hyper(_)
            | Op::Param
            | Op::Grad
            | Op::Input(_)
            | Op::Load(_)
            | Op::Eye
            | Op::Broadcast
            | Op::PrepareOut(_) => declared,
            _ => Some(result_type(&op, &tys, declared.as_ref()).unwrap_or(Ty::NUM)),
        };
        let guard = self.guard_for(&op, &args);
        self.func.push(Inst { op, args, ty, guard })
    }

    fn bin(&mut self, b: Binary, x: Value, y: Value) -> Value {
        self.emit(Op::Binary(b), vec![x, y], None)
    }

    fn un(&mut self, u: Unary, x: Value) -> Value {
        self.emit(Op::Unary(u), vec![x], None)
    }

    /// Broadcasts `v` up to `shape` when it is smaller.
    fn fit(&mut self, v: Value, shape: &Shape) -> Value {
        if self.func.ty(v).shape == *shape {
            v
        } else {
            self.emit(Op::Broadcast, vec![v], Some(Ty::num(shape.clone())))
        }
    }

    fn and_guard(&mut self, c: Value) -> Value {
        match self.guard {
            Some(g) => self.bin(Binary::And, g, c),
            None => c,
        }
    }

    /// Runs `body` in a region guarded by `cond` (and the enclosing guard); every variable it
    /// reassigns is then merged as `select(cond, new, old)`.
    fn guarded(&mut self, cond: Value, body: impl FnOnce(&mut Self)) -> Vec<HashMap<String, Value>> {
        let g = self.and_guard(cond);
        let saved = (self.guard, self.depth);
        self.depth += 1;
        self.guard = Some(g);
        self.guard_depth.insert(g, self.depth);
        body(self);
        self.guard = saved.0;
        self.depth = saved.1;
        self.scopes.clone()
    }

    fn merge(&mut self, cond: Value, then: &[HashMap<String, Value>], otherwise: &[HashMap<String, Value>]) {
        for (i, scope) in otherwise.iter().enumerate() {
            // In name order, so the IR is the same from run to run.
            let mut names: Vec<(&String, &Value)> = scope.iter().collect();
            names.sort();
            for (name, &b) in names {
                let a = then[i][name];
                let v = if a == b { a } else { self.emit(Op::Select, vec![cond, a, b], None) };
                self.scopes[i].insert(name.clone(), v);
            }
        }
    }

    fn block(&mut self, b: &Block) {
        self.push_scope();
        for s in &b.stmts {
            self.stmt(s);
        }
        self.pop_scope();
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Let { names, value, .. } => match (&value.kind, names.len()) {
                (ExprKind::Tuple(items), n) if n > 1 => {
                    let vs: Vec<Value> = items.iter().map(|e| self.expr(e)).collect();
                    for (n, v) in names.iter().zip(vs) {
                        self.bind(&n.name, v);
                    }
                }
                _ => {
                    let v = self.expr(value);
                    self.bind(&names[0].name, v);
                }
            },
            Stmt::Var { name, value, .. } => {
                let v = self.expr(value);
                self.bind(&name.name, v);
            }
            Stmt::Assign { target, op, value, .. } => {
                let rhs = self.expr(value);
                let old = self.lookup(&target.name);
                let v = match op {
                    AssignOp::Set => rhs,
                    AssignOp::Add => self.bin(Binary::Add, old, rhs),
                    AssignOp::Sub => self.bin(Binary::Sub, old, rhs),
                    AssignOp::Mul => self.bin(Binary::Mul, old, rhs),
                    AssignOp::Div => self.bin(Binary::Div, old, rhs),
                };
                let shape = self.func.ty(old).shape.clone();
                let v = self.fit(v, &shape);
                self.assign(&target.name, v);
            }
            Stmt::If { cond, then, otherwise, .. } => {
                let c = self.expr(cond);
                let before = self.scopes.clone();
                let after_then = self.guarded(c, |l| l.block(then));
                self.scopes = before;
                let not_c = self.un(Unary::Not, c);
                let after_else = match otherwise {
                    Some(b) => self.guarded(not_c, |l| l.block(b)),
                    None => self.scopes.clone(),
                };
                self.merge(c, &after_then, &after_else);
            }
            Stmt::With { value, body, .. } => {
                let precision = match &value.kind {
                    ExprKind::Name(n) => match gdc_dsl::builtins::precision_value(n) {
                        Some(bits) if bits == F32_BITS => None,
                        Some(bits) => Some(self.constant(bits)),
                        None => Some(self.lookup(n)),
                    },
                    _ => None,
                };
                let outer = std::mem::replace(&mut self.precision, precision);
                self.block(body);
                self.precision = outer;
            }
            Stmt::Every { period, phase, body, .. } => {
                // Steps P, P+K, P+2K, ...: (step - P) % K == 0 (P = 1 unless written), and
                // step >= P when P is written (before it, step - P may be a negative multiple).
                let k = self.expr(period);
                let step = self.emit(Op::Step, vec![], None);
                let p = match phase {
                    Some(p) => self.expr(p),
                    None => self.constant(1.0),
                };
                let s1 = self.bin(Binary::Sub, step, p);
                let r = self.bin(Binary::Rem, s1, k);
                let zero = self.constant(0.0);
                let mut c = self.bin(Binary::Eq, r, zero);
                if phase.is_some() {
                    let started = self.bin(Binary::Ge, step, p);
                    c = self.bin(Binary::And, started, c);
                }
                self.conditional(c, body);
            }
            Stmt::For { var, start, end, body, span } => {
                // A loop that passes the limit is reported at its `for` keyword.
                let span = &Span::new(span.start as usize, span.start as usize + 3);
                let resolve = |e: &Expr| match &e.kind {
                    ExprKind::Name(n) => self.static_args.get(n).cloned().unwrap_or_else(|| e.clone()),
                    _ => e.clone(),
                };
                let (start, end) = (resolve(start), resolve(end));
                let lit = |e: &Expr| match e.kind {
                    ExprKind::Number(v) => Some(v as i64),
                    _ => None,
                };
                let lo = lit(&start).unwrap_or(0);
                match lit(&end) {
                    Some(hi) => {
                        for i in lo..hi {
                            if !self.room(*span) {
                                break;
                            }
                            self.push_scope();
                            let iv = self.constant(i as f64);
                            self.bind(&var.name, iv);
                            self.block(body);
                            self.pop_scope();
                        }
                    }
                    None => {
                        // A ranged int hyperparameter: unroll to the range's end, each
                        // iteration guarded by `i < n` and nested in the one before (it
                        // runs only if that one did), so an iteration reads the previous
                        // one's values directly; the selects that pick the values of the
                        // last iteration run come after the loop, where they fuse into
                        // one pass. Iterations past `n` then cost nothing, rather than a
                        // copy of every loop variable each.
                        let ExprKind::Name(n) = &end.kind else { return };
                        let max = self
                            .module
                            .hypers
                            .iter()
                            .find(|h| &h.name == n)
                            .and_then(|h| h.range)
                            .map_or(0, |r| r.1 as i64);
                        let bound = self.lookup(n);
                        // (condition, scopes before the iteration, enclosing guard and depth)
                        let mut open = Vec::new();
                        for i in lo..max {
                            if !self.room(*span) {
                                break;
                            }
                            let iv = self.constant(i as f64);
                            let c = self.bin(Binary::Lt, iv, bound);
                            let before = self.scopes.clone();
                            let g = self.and_guard(c);
                            open.push((c, before, self.guard, self.depth));
                            self.depth += 1;
                            self.guard = Some(g);
                            self.guard_depth.insert(g, self.depth);
                            self.push_scope();
                            self.bind(&var.name, iv);
                            self.block(body);
                            self.pop_scope();
                        }
                        while let Some((c, before, guard, depth)) = open.pop() {
                            let after = self.scopes.clone();
                            self.guard = guard;
                            self.depth = depth;
                            self.scopes = before.clone();
                            self.merge(c, &after, &before);
                        }
                    }
                }
            }
            Stmt::Return { value, .. } => {
                let v = self.expr(value);
                // `return` is a keyword, so this binding cannot clash with a user's name;
                // `inline` reads it back.
                self.bind("return", v);
            }
        }
    }

    fn conditional(&mut self, c: Value, body: &Block) {
        let before = self.scopes.clone();
        let after = self.guarded(c, |l| l.block(body));
        self.scopes = before.clone();
        self.merge(c, &after, &before);
    }

    fn expr(&mut self, e: &Expr) -> Value {
        match &e.kind {
            ExprKind::Number(v) => self.constant(*v),
            ExprKind::Bool(b) => self.emit(Op::Bool(*b), vec![], None),
            ExprKind::Name(n) => self.lookup(n),
            ExprKind::Unary(op, x) => {
                let x = self.expr(x);
                self.un(if *op == UnOp::Neg { Unary::Neg } else { Unary::Not }, x)
            }
            ExprKind::Binary(op, a, b) => {
                let a = self.expr(a);
                let b = self.expr(b);
                if *op == BinOp::MatMul {
                    let args = [a, b].into_iter().chain(self.precision).collect();
                    return self.emit(Op::MatMul { ta: false, tb: false, sym: false }, args, None);
                }
                let op = match op {
                    BinOp::Add => Binary::Add,
                    BinOp::Sub => Binary::Sub,
                    BinOp::Mul => Binary::Mul,
                    BinOp::Div => Binary::Div,
                    BinOp::Rem => Binary::Rem,
                    BinOp::Pow => Binary::Pow,
                    BinOp::Eq => Binary::Eq,
                    BinOp::Ne => Binary::Ne,
                    BinOp::Lt => Binary::Lt,
                    BinOp::Le => Binary::Le,
                    BinOp::Gt => Binary::Gt,
                    BinOp::Ge => Binary::Ge,
                    BinOp::And => Binary::And,
                    BinOp::Or => Binary::Or,
                    BinOp::MatMul => Binary::Mul,
                };
                self.bin(op, a, b)
            }
            ExprKind::Transpose(x) => {
                let x = self.expr(x);
                self.emit(Op::Transpose, vec![x], None)
            }
            ExprKind::Tuple(items) => match items.first() {
                Some(x) => self.expr(x),
                None => self.constant(0.0),
            },
            ExprKind::Call(name, args) => self.call(&name.name, args),
        }
    }

    /// The number of elements of a value's shape, as a scalar.
    fn count(&mut self, shape: &Shape) -> Value {
        match shape {
            Shape::Scalar => self.constant(1.0),
            Shape::Like => self.emit(Op::Shape(ShapeScalar::Numel), vec![], None),
            Shape::Dims(dims) => {
                let mut acc: Option<Value> = None;
                for d in dims.clone() {
                    let v = match d.as_str() {
                        "rows" => self.emit(Op::Shape(ShapeScalar::Rows), vec![], None),
                        _ => self.emit(Op::Shape(ShapeScalar::Cols), vec![], None),
                    };
                    acc = Some(match acc {
                        Some(a) => self.bin(Binary::Mul, a, v),
                        None => v,
                    });
                }
                acc.unwrap_or_else(|| self.constant(1.0))
            }
        }
    }

    fn call(&mut self, name: &str, args: &[ast::Arg]) -> Value {
        let named = |key: &str| args.iter().find(|a| a.name.as_ref().is_some_and(|n| n.name == key));
        let axis = named("axis").and_then(|a| match a.value.kind {
            ExprKind::Number(v) => Some(v as usize),
            _ => None,
        });
        let precision = match named("precision").map(|a| &a.value.kind) {
            Some(ExprKind::Name(n)) if n == "f32" => Precision::F32,
            _ => Precision::F64,
        };
        let method = match named("method").map(|a| &a.value.kind) {
            Some(ExprKind::Name(n)) if n == "newton" => RootMethod::Newton,
            _ => RootMethod::Eigh,
        };
        let pos: Vec<&Expr> = args.iter().filter(|a| a.name.is_none()).map(|a| &a.value).collect();
        if let Some(f) = self.file.fns.iter().find(|f| f.name.name == name) {
            let vals: Vec<Value> = pos.iter().map(|e| self.expr(e)).collect();
            // A static argument of the caller's own parameter resolves to what it was given.
            let exprs: Vec<Expr> = pos
                .iter()
                .map(|e| match &e.kind {
                    ExprKind::Name(n) => self.static_args.get(n).cloned().unwrap_or_else(|| (*e).clone()),
                    _ => (*e).clone(),
                })
                .collect();
            return self.inline(f, vals, exprs);
        }
        if name == "present" {
            let input = match pos.first().map(|e| &e.kind) {
                Some(ExprKind::Name(n)) => self.module.inputs.iter().position(|x| x.name == *n),
                _ => None,
            };
            // An optional hyperparameter is unset while it holds NaN: `h == h` is false then.
            let hyper = match pos.first().map(|e| &e.kind) {
                Some(ExprKind::Name(n)) if input.is_none() => {
                    self.module.hypers.iter().position(|h| h.name == *n && h.optional)
                }
                _ => None,
            };
            if let Some(h) = hyper {
                let v = self.emit(Op::Hyper(h), vec![], Some(Ty::NUM));
                return self.emit(Op::Binary(Binary::Eq), vec![v, v], None);
            }
            // The checker accepts only an optional input's name; `false` keeps lowering total.
            return match input {
                Some(i) => self.emit(Op::Present(i), vec![], None),
                None => self.emit(Op::Bool(false), vec![], None),
            };
        }
        if name == "has_role" {
            let mask = pos
                .iter()
                .filter_map(|e| match &e.kind {
                    ExprKind::Name(n) => Role::from_name(n),
                    _ => None,
                })
                .fold(0u8, |m, r| m | r.bit());
            let flag = self.emit(Op::Shape(ShapeScalar::RoleIn(mask)), vec![], None);
            let zero = self.constant(0.0);
            return self.bin(Binary::Ne, flag, zero);
        }
        let vals: Vec<Value> = pos.iter().map(|e| self.expr(e)).collect();
        let x = vals.first().copied().unwrap_or_else(|| self.constant(0.0));
        // A vector reduced along its only axis is reduced whole: the kernels' axis
        // reductions are over a matrix's rows or columns.
        let axis = match &self.func.ty(x).shape {
            Shape::Dims(d) if d.len() == 1 => None,
            _ => axis,
        };
        match name {
            "cos" => self.un(Unary::Cos, x),
            "ramp" => {
                let f = self.ramp_fraction(x, vals[1], vals[2]);
                self.interpolate(vals[3], vals[4], f)
            }
            "cosine_ramp" => {
                let f = self.ramp_fraction(x, vals[1], vals[2]);
                self.cosine(vals[3], vals[4], f)
            }
            "power_ramp" => {
                // v1 + (v0 - v1) * (1 - f)^power
                let f = self.ramp_fraction(x, vals[1], vals[2]);
                let one = self.constant(1.0);
                let rest = self.bin(Binary::Sub, one, f);
                let w = self.bin(Binary::Pow, rest, vals[5]);
                let d = self.bin(Binary::Sub, vals[3], vals[4]);
                let dw = self.bin(Binary::Mul, d, w);
                self.bin(Binary::Add, vals[4], dw)
            }
            "inv_sqrt" => {
                // v0 until t0, then v0 * sqrt(t0 / t)
                let (t, t0, v0) = (x, vals[1], vals[2]);
                let q = self.bin(Binary::Div, t0, t);
                let r = self.un(Unary::Sqrt, q);
                let decayed = self.bin(Binary::Mul, v0, r);
                let before = self.bin(Binary::Le, t, t0);
                self.emit(Op::Select, vec![before, v0, decayed], None)
            }
            "warmup_cosine" => {
                // optax's warmup_cosine_decay_schedule(0, peak, warmup, decay_steps, end)
                let (t, peak, warmup, decay, end) = (x, vals[1], vals[2], vals[3], vals[4]);
                let zero = self.constant(0.0);
                let fw = self.ramp_fraction(t, zero, warmup);
                let up = self.interpolate(zero, peak, fw);
                let fd = self.ramp_fraction(t, warmup, decay);
                let cosine = self.cosine(peak, end, fd);
                // optax scales by peak (alpha = end / peak, 0 when peak is 0): a zero peak
                // stays at zero whatever `end`.
                let live = self.bin(Binary::Ne, peak, zero);
                let down = self.emit(Op::Select, vec![live, cosine, zero], None);
                let warming = self.bin(Binary::Lt, t, warmup);
                self.emit(Op::Select, vec![warming, up, down], None)
            }
            "wsd" => {
                // warmup-stable-decay: 0 -> peak over warmup, peak for stable, peak -> 0 over decay
                let (t, peak, warmup, stable, decay) = (x, vals[1], vals[2], vals[3], vals[4]);
                let zero = self.constant(0.0);
                let fw = self.ramp_fraction(t, zero, warmup);
                let up = self.interpolate(zero, peak, fw);
                let start = self.bin(Binary::Add, warmup, stable);
                let stop = self.bin(Binary::Add, start, decay);
                let fd = self.ramp_fraction(t, start, stop);
                let down = self.interpolate(peak, zero, fd);
                let warming = self.bin(Binary::Lt, t, warmup);
                self.emit(Op::Select, vec![warming, up, down], None)
            }
            "global_sum" => {
                let s = self.emit(Op::Reduce(ReduceKind::Sum, None), vec![x], None);
                self.emit(Op::AcrossParams(ReduceKind::Sum), vec![s], None)
            }
            "global_norm" => {
                let sq = self.bin(Binary::Mul, x, x);
                let s = self.emit(Op::Reduce(ReduceKind::Sum, None), vec![sq], None);
                let total = self.emit(Op::AcrossParams(ReduceKind::Sum), vec![s], None);
                self.un(Unary::Sqrt, total)
            }
            "global_max_abs" => {
                let s = self.emit(Op::Reduce(ReduceKind::MaxAbs, None), vec![x], None);
                self.emit(Op::AcrossParams(ReduceKind::MaxAbs), vec![s], None)
            }
            "sqrt" => self.un(Unary::Sqrt, x),
            "rsqrt" => self.un(Unary::Rsqrt, x),
            "exp" => self.un(Unary::Exp, x),
            "log" => self.un(Unary::Log, x),
            "abs" => self.un(Unary::Abs, x),
            "sign" => self.un(Unary::Sign, x),
            // One argument: the smallest or largest element (along `axis`); min(x) is -max(-x),
            // exactly.
            "min" if vals.len() == 1 => {
                let n = self.un(Unary::Neg, x);
                let m = self.emit(Op::Reduce(ReduceKind::Max, axis), vec![n], None);
                self.un(Unary::Neg, m)
            }
            "max" if vals.len() == 1 => self.emit(Op::Reduce(ReduceKind::Max, axis), vec![x], None),
            "min" => self.bin(Binary::Min, x, vals[1]),
            "max" => self.bin(Binary::Max, x, vals[1]),
            "clamp" => {
                let lo = self.bin(Binary::Max, x, vals[1]);
                self.bin(Binary::Min, lo, vals[2])
            }
            "lerp" => {
                let mut vectors: Vec<&String> = vals[..3]
                    .iter()
                    .filter_map(|v| match &self.func.ty(*v).shape {
                        Shape::Dims(d) if d.len() == 1 => Some(&d[0]),
                        _ => None,
                    })
                    .collect();
                vectors.dedup();
                if vectors.len() > 1 {
                    // Vectors over different dimensions: `b - a` of a `[rows]` a and a `[cols]`
                    // b is `[cols, rows]`, the transpose of the lerp's `[rows, cols]` (and so is
                    // `t * d` of a `[cols]` t and a `[rows]` d). a - (a - b) * t is
                    // a + t * (b - a) bit for bit, with the operands in the checker's order.
                    let d = self.bin(Binary::Sub, x, vals[1]);
                    let t = self.bin(Binary::Mul, d, vals[2]);
                    self.bin(Binary::Sub, x, t)
                } else {
                    // a + t * (b - a)
                    let d = self.bin(Binary::Sub, vals[1], x);
                    let t = self.bin(Binary::Mul, vals[2], d);
                    self.bin(Binary::Add, x, t)
                }
            }
            "where" => self.emit(Op::Select, vec![x, vals[1], vals[2]], None),
            "sum" => self.emit(Op::Reduce(ReduceKind::Sum, axis), vec![x], None),
            "max_abs" => self.emit(Op::Reduce(ReduceKind::MaxAbs, axis), vec![x], None),
            "mean" => {
                let shape = self.func.ty(x).shape.clone();
                let s = self.emit(Op::Reduce(ReduceKind::Sum, axis), vec![x], None);
                let n = match (axis, &shape) {
                    (Some(ax), Shape::Dims(d)) if d.len() == 2 => self.count(&Shape::Dims(vec![d[ax].clone()])),
                    _ => self.count(&shape),
                };
                self.bin(Binary::Div, s, n)
            }
            "norm" => {
                let sq = self.bin(Binary::Mul, x, x);
                let s = self.emit(Op::Reduce(ReduceKind::Sum, axis), vec![sq], None);
                self.un(Unary::Sqrt, s)
            }
            "dot" => {
                let prod = self.bin(Binary::Mul, x, vals[1]);
                self.emit(Op::Reduce(ReduceKind::Sum, None), vec![prod], None)
            }
            "eye" => {
                let ty = self.func.ty(x).clone();
                self.emit(Op::Eye, vec![], Some(ty))
            }
            "outer" => self.emit(Op::Outer, vec![x, vals[1]], None),
            "axis_min" => {
                let ty = Ty::num(self.pshape.clone());
                self.emit(Op::AxisMin, vec![x], Some(ty))
            }
            "axis_max" => self.emit(Op::AxisMax, vec![x], None),
            "inv_root" => self.emit(Op::InvRoot(precision, method), vec![x, vals[1]], None),
            "eigvecs" => self.emit(Op::Eigvecs(precision), vec![x], None),
            "eigvals" => self.emit(Op::Eigvals(precision), vec![x], None),
            "qr" => self.emit(Op::Qr(precision), vec![x], None),
            "sort_perm" => self.emit(Op::SortPerm, vec![x], None),
            _ => self.constant(0.0),
        }
    }

    /// How far `t` is through `t0..t1`, clamped to 0..=1; 0 when `t1 <= t0` (a ramp of no
    /// length stays at its start, as optax's schedules of zero transition steps do).
    fn ramp_fraction(&mut self, t: Value, t0: Value, t1: Value) -> Value {
        let (zero, one) = (self.constant(0.0), self.constant(1.0));
        let span = self.bin(Binary::Sub, t1, t0);
        let into = self.bin(Binary::Sub, t, t0);
        let raw = self.bin(Binary::Div, into, span);
        let lo = self.bin(Binary::Max, raw, zero);
        let f = self.bin(Binary::Min, lo, one);
        let proper = self.bin(Binary::Gt, span, zero);
        self.emit(Op::Select, vec![proper, f, zero], None)
    }

    /// `v0 + (v1 - v0) * f`.
    fn interpolate(&mut self, v0: Value, v1: Value, f: Value) -> Value {
        let d = self.bin(Binary::Sub, v1, v0);
        let df = self.bin(Binary::Mul, d, f);
        self.bin(Binary::Add, v0, df)
    }

    /// `v1 + (v0 - v1) * (1 + cos(pi f)) / 2`: a half cosine from `v0` (f = 0) to `v1` (f = 1).
    fn cosine(&mut self, v0: Value, v1: Value, f: Value) -> Value {
        let pi = self.constant(std::f64::consts::PI);
        let (one, half) = (self.constant(1.0), self.constant(0.5));
        let a = self.bin(Binary::Mul, pi, f);
        let c = self.un(Unary::Cos, a);
        let c1 = self.bin(Binary::Add, one, c);
        let w = self.bin(Binary::Mul, half, c1);
        let d = self.bin(Binary::Sub, v0, v1);
        let dw = self.bin(Binary::Mul, d, w);
        self.bin(Binary::Add, v1, dw)
    }

    /// Inlines a user function: its body runs in a scope that sees only its parameters.
    fn inline(&mut self, f: &FnDef, args: Vec<Value>, exprs: Vec<Expr>) -> Value {
        if !self.room(f.name.span) {
            return self.constant(0.0);
        }
        let saved = std::mem::replace(&mut self.scopes, vec![HashMap::new()]);
        let static_args = f.params.iter().zip(exprs).map(|(p, e)| (p.name.name.clone(), e)).collect();
        let saved_static = std::mem::replace(&mut self.static_args, static_args);
        for (p, v) in f.params.iter().zip(args) {
            self.bind(&p.name.name, v);
        }
        for s in &f.body.stmts {
            self.stmt(s);
        }
        let ret = self.scopes[0].get("return").copied();
        self.scopes = saved;
        self.static_args = saved_static;
        ret.unwrap_or_else(|| self.constant(0.0))
    }
}
