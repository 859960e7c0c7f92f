//! The generator of random well-typed optimizers. Types are tracked as the checker sees
//! them (a scalar, `like(p)`, vectors and matrices over the update's named dimensions), so
//! every program it writes should check; a rejection is a generator bug.
//!
//! Numerical tameness is by construction, so that a disagreement means a bug and not
//! conditioning: every function is applied where it is smooth and bounded (`log(abs(x) +
//! 1)`, `exp(clamp(x, -4, 4))`, a divisor `abs(y) + 1`, a power of `abs(x) + 0.5` with a
//! small exponent, `%` of a value kept away from its discontinuities), every operand of a
//! matrix operation is normalised (`x / (1 + norm(x))`), decompositions take well-damped
//! symmetric (`X @ X.T + c * eye`) or well-conditioned (`eye + 0.5 * X`) matrices, state
//! and loop variables are updated by contractions of bounded values, and the step is
//! `p - lr * u / (1 + abs(u))`. Comparisons that decide an `if` or a `where` read the step,
//! hyperparameters, shape scalars or the gradient (an exact input on both backends), never
//! values computed in two precisions, which could fall on either side of a threshold.

use super::ast::{Decl, Expr, Func, Kind, Prog, Stmt, Update};
use std::collections::BTreeSet;

/// xorshift64 behind a splitmix-scrambled seed: the same stream for a seed everywhere.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `k / n`.
    pub fn chance(&mut self, k: usize, n: usize) -> bool {
        self.below(n) < k
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// A named dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    R,
    C,
}

/// A type as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    S,
    L,
    V(Dim),
    M(Dim, Dim),
}

/// What a piece of code may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Prepare,
    Update(Kind),
    FnScalar,
    FnTensor,
    FnMatrix,
}

#[derive(Clone, Debug)]
struct Name {
    name: String,
    ty: Ty,
    mutable: bool,
}

#[derive(Clone, Debug)]
struct Cx {
    at: Where,
    names: Vec<Name>,
    /// The tensor everything else can be derived from (`g`, or a function's `x`).
    base: Option<(String, Ty)>,
    dims: Vec<Dim>,
    /// Global reductions are allowed (a single update).
    global_ok: bool,
    /// `step`, hyperparameters and shape scalars are visible.
    has_step: bool,
}

#[derive(Clone, Debug)]
enum HyperTy {
    F32,
    /// A ranged int for `for` bounds or `every` periods: its range.
    IntRanged(u32),
    Int,
    Bool,
}

#[derive(Clone, Debug)]
struct HyperInfo {
    name: String,
    ty: HyperTy,
}

/// A state's declared shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Like,
    Scalar,
    V(Dim),
    M(Dim, Dim),
}

#[derive(Clone, Debug)]
struct StateInfo {
    name: String,
    shape: Shape,
}

#[derive(Clone, Debug)]
enum FnSig {
    Scalar,
    Tensor,
    Matrix,
}

/// Generator options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Programs for the GPU check (`gdc verify --backend cuda`): no bf16 state (the GPU
    /// backend refuses it), and an `update(p, g)` beside a vector update that would be alone
    /// (`gdc verify` steps matrices too).
    pub gpu: bool,
}

/// Generates the program for `seed`.
pub fn generate(seed: u64, options: Options) -> Prog {
    let mut g = Gen {
        rng: Rng::new(seed),
        next: 0,
        features: BTreeSet::new(),
        hypers: Vec::new(),
        states: Vec::new(),
        globals: Vec::new(),
        exported: Vec::new(),
        fns: Vec::new(),
        options,
    };
    g.program()
}

struct Gen {
    rng: Rng,
    next: usize,
    features: BTreeSet<&'static str>,
    hypers: Vec<HyperInfo>,
    states: Vec<StateInfo>,
    globals: Vec<String>,
    /// Prepare's top-level bindings, visible in updates.
    exported: Vec<String>,
    fns: Vec<(String, FnSig)>,
    options: Options,
}

const LITS: &[&str] = &["0.5", "2", "0.1", "1e-3", "3", "0.25", "1.5", ".75"];

fn a(s: impl AsRef<str>) -> Expr {
    Expr::atom(s.as_ref())
}

/// `x / (1 + norm(x))`: entries and norm below 1.
fn nz(x: Expr) -> Expr {
    Expr::bin("/", x.clone(), Expr::bin("+", a("1"), Expr::call("norm", vec![x])))
}

/// `e / (1 + abs(e))`: in (-1, 1), Lipschitz 1.
fn soft(e: Expr) -> Expr {
    Expr::bin("/", e.clone(), Expr::bin("+", a("1"), Expr::call("abs", vec![e])))
}

impl Gen {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn feat(&mut self, f: &'static str) {
        self.features.insert(f);
    }

    fn program(&mut self) -> Prog {
        // Updates: a random non-empty subset of the three kinds.
        let mut kinds = Vec::new();
        loop {
            if self.rng.chance(1, 2) {
                kinds.push(Kind::Any);
            }
            if self.rng.chance(1, 2) {
                kinds.push(Kind::Vector);
            }
            if self.rng.chance(3, 5) {
                kinds.push(if self.rng.chance(1, 4) { Kind::Batched } else { Kind::Matrix });
            }
            if self.options.gpu && kinds == [Kind::Vector] {
                kinds.insert(0, Kind::Any);
            }
            if !kinds.is_empty() {
                break;
            }
        }
        let has_vec = kinds.iter().any(|k| *k != Kind::Any);
        let has_mat = kinds.iter().any(|k| matches!(k, Kind::Matrix | Kind::Batched));
        let has_vec_only = kinds.contains(&Kind::Vector);

        // Hyperparameters.
        let mut hypers = vec![Decl {
            name: "lr".into(),
            text: format!("hyper lr = {}", self.rng.pick(&["0.1", "0.05", "0.2", "0.3"])),
        }];
        self.hypers.push(HyperInfo { name: "lr".into(), ty: HyperTy::F32 });
        for _ in 0..self.rng.below(5) {
            let name = self.fresh("h");
            let (text, ty) = match self.rng.below(7) {
                0 => {
                    self.feat("hyper f32");
                    (format!("hyper {name} = {}", self.rng.pick(&["0.9", "0.99", "0.8"])), HyperTy::F32)
                }
                1 => {
                    self.feat("hyper f32 in range");
                    (format!("hyper {name} = 0.5 in 0..=1"), HyperTy::F32)
                }
                2 => {
                    self.feat("hyper f32");
                    (format!("hyper {name}: f32 = {}", self.rng.pick(&["2", "0.3", "1.5"])), HyperTy::F32)
                }
                3 => {
                    self.feat("hyper int in range");
                    let hi = 1 + self.rng.below(3) as u32;
                    let lo = self.rng.below(2) as u32;
                    (format!("hyper {name}: int = {hi} in {lo}..={hi}"), HyperTy::IntRanged(lo))
                }
                4 => {
                    self.feat("hyper int");
                    (format!("hyper {name}: int = {}", 1 + self.rng.below(5)), HyperTy::Int)
                }
                _ => {
                    self.feat("hyper bool");
                    (format!("hyper {name} = {}", self.rng.pick(&["true", "false"])), HyperTy::Bool)
                }
            };
            hypers.push(Decl { name: name.clone(), text });
            self.hypers.push(HyperInfo { name, ty });
        }

        // Functions.
        let mut fns = Vec::new();
        for _ in 0..self.rng.below(3) {
            let sig = match self.rng.below(3) {
                0 => FnSig::Scalar,
                1 => FnSig::Tensor,
                _ if has_mat || has_vec_only => FnSig::Matrix,
                _ => FnSig::Scalar,
            };
            fns.push(self.function(sig));
        }

        // State.
        let mut states = Vec::new();
        for _ in 0..self.rng.below(5) {
            let mut shapes = vec![Shape::Like, Shape::Like, Shape::Scalar];
            if has_vec {
                shapes.extend([Shape::V(Dim::R), Shape::M(Dim::R, Dim::R)]);
            }
            if has_mat {
                shapes.extend([
                    Shape::V(Dim::C),
                    Shape::M(Dim::R, Dim::C),
                    Shape::M(Dim::C, Dim::R),
                    Shape::M(Dim::C, Dim::C),
                ]);
            }
            let shape = *self.rng.pick(&shapes);
            states.push(self.state(shape));
        }
        // A program with square matrices (a matrix update, or a vector update's `[rows,
        // rows]` values) declares a square statistic at least, so that `gdc verify` (the
        // GPU check) keeps its shapes small: it would step a vector of 70,000 elements, and
        // `outer(g, g)` of that is 20 GB.
        if (has_mat || has_vec_only) && !self.states.iter().any(|s| matches!(s.shape, Shape::M(x, y) if x == y)) {
            let d = if has_mat { Dim::C } else { Dim::R };
            states.push(self.state(Shape::M(d, d)));
        }

        // Globals and prepare.
        let mut globals = Vec::new();
        let mut prepare = None;
        if self.rng.chance(2, 5) {
            self.feat("prepare");
            for _ in 0..self.rng.below(3) {
                self.feat("global");
                let name = self.fresh("gl");
                globals.push(Decl { name: name.clone(), text: format!("global {name} = {}", self.rng.pick(LITS)) });
                self.globals.push(name);
            }
            let mut cx = Cx {
                at: Where::Prepare,
                names: self.scalar_names(true),
                base: None,
                dims: vec![],
                global_ok: false,
                has_step: true,
            };
            for gname in self.globals.clone() {
                cx.names.push(Name { name: gname, ty: Ty::S, mutable: true });
            }
            let before = cx.names.len();
            let mut body = {
                let n = 1 + self.rng.below(4);
                self.block(&mut cx, n, 2, false)
            };
            // Every global is assigned at the top level.
            for gname in self.globals.clone() {
                let e = self.expr(&cx, Ty::S, 2);
                let v = if self.rng.chance(1, 2) {
                    Expr::call("lerp", vec![a(&gname), soft(e), a("0.5")])
                } else {
                    Expr::call("max", vec![a(&gname), soft(e)])
                };
                body.push(Stmt::Assign(gname, "=", v));
            }
            self.exported = cx.names[before..].iter().map(|n| n.name.clone()).collect();
            prepare = Some(body);
        }

        // Updates.
        let single = kinds.len() == 1;
        let mut updates = Vec::new();
        for kind in kinds {
            self.feat(match kind {
                Kind::Any => "update(p, g)",
                Kind::Vector => "update(p: [rows], g)",
                Kind::Matrix => "update(p: [rows, cols], g)",
                Kind::Batched => "update(p: [..., rows, cols], g)",
            });
            updates.push(self.update(kind, single));
        }
        // Half the programs with products run them in a precision hyperparameter (drawn
        // last, so the rest of a seed's program is what it was before precisions).
        if self.features.contains("@") && self.rng.chance(1, 2) {
            self.feat("with precision");
            let name = self.fresh("h");
            hypers.push(Decl {
                name: name.clone(),
                text: format!("hyper {name} = {}", self.rng.pick(&["bf16", "tf32"])),
            });
            for u in &mut updates {
                u.precision = Some(name.clone());
            }
        }
        Prog { fns, hypers, states, globals, prepare, updates, features: std::mem::take(&mut self.features) }
    }

    fn state(&mut self, shape: Shape) -> Decl {
        let name = self.fresh("s");
        let bf16 = shape != Shape::Scalar && !self.options.gpu && self.rng.chance(1, 6);
        let shape_text = match shape {
            Shape::Like => "".to_string(),
            Shape::Scalar => "[]".to_string(),
            Shape::V(d) => format!("[{}]", dim_name(d)),
            Shape::M(x, y) => format!("[{}, {}]", dim_name(x), dim_name(y)),
        };
        self.feat(match shape {
            Shape::Like => "state like p",
            Shape::Scalar => "state []",
            Shape::V(Dim::R) => "state [rows]",
            Shape::V(Dim::C) => "state [cols]",
            Shape::M(Dim::R, Dim::C) => "state [rows, cols]",
            Shape::M(Dim::C, Dim::R) => "state [cols, rows]",
            Shape::M(Dim::R, Dim::R) => "state [rows, rows]",
            Shape::M(Dim::C, Dim::C) => "state [cols, cols]",
        });
        if bf16 {
            self.feat("state bf16");
        }
        let f32h: Vec<String> =
            self.hypers.iter().filter(|h| matches!(h.ty, HyperTy::F32)).map(|h| h.name.clone()).collect();
        let square = matches!(shape, Shape::M(x, y) if x == y);
        let mut inits: Vec<(&'static str, String)> =
            vec![("init zeros", "zeros".into()), ("init number", self.rng.pick(LITS).to_string())];
        inits.push(("init hyper", self.rng.pick(&f32h).clone()));
        if matches!(shape, Shape::Like | Shape::M(Dim::R, Dim::C)) {
            inits.push(("init p", "p".into()));
            inits.push(("init expression", format!("{} * p", self.rng.pick(LITS))));
        }
        if square {
            inits.push(("init eye", "eye".into()));
            inits.push(("init expression", format!("{} * eye", self.rng.pick(&f32h))));
            inits.push(("init expression", format!("eye + {}", self.rng.pick(LITS))));
        }
        inits.push(("init expression", format!("{} + {}", self.rng.pick(&f32h), self.rng.pick(LITS))));
        let (feat, init) = self.rng.pick(&inits).clone();
        self.feat(feat);
        let sep = if bf16 || !shape_text.is_empty() { ": " } else { "" };
        let b = if bf16 { "bf16 " } else { "" };
        let text = format!("state {name}{sep}{b}{shape_text} = {init}").replace("bf16  =", "bf16 =");
        self.states.push(StateInfo { name: name.clone(), shape });
        Decl { name, text }
    }

    /// Hyperparameters (and, in updates, prepare's exports and globals) as scalar names.
    fn scalar_names(&self, prepare: bool) -> Vec<Name> {
        let mut out: Vec<Name> = self
            .hypers
            .iter()
            .filter(|h| !matches!(h.ty, HyperTy::Bool))
            .map(|h| Name { name: h.name.clone(), ty: Ty::S, mutable: false })
            .collect();
        if !prepare {
            for n in self.exported.iter().chain(&self.globals) {
                out.push(Name { name: n.clone(), ty: Ty::S, mutable: false });
            }
        }
        out
    }

    fn function(&mut self, sig: FnSig) -> Func {
        let name = self.fresh("f");
        let (params, ret, mut cx) = match sig {
            FnSig::Scalar => {
                self.feat("fn scalar");
                let cx = Cx {
                    at: Where::FnScalar,
                    names: vec![
                        Name { name: "a".into(), ty: Ty::S, mutable: false },
                        Name { name: "b".into(), ty: Ty::S, mutable: false },
                    ],
                    base: None,
                    dims: vec![],
                    global_ok: false,
                    has_step: false,
                };
                (vec![("a".into(), "f32".into()), ("b".into(), "f32".into())], "f32".to_string(), cx)
            }
            FnSig::Tensor => {
                self.feat("fn tensor");
                let cx = Cx {
                    at: Where::FnTensor,
                    names: vec![
                        Name { name: "x".into(), ty: Ty::L, mutable: false },
                        Name { name: "y".into(), ty: Ty::L, mutable: false },
                        Name { name: "c".into(), ty: Ty::S, mutable: false },
                    ],
                    base: Some(("x".into(), Ty::L)),
                    dims: vec![],
                    global_ok: false,
                    has_step: false,
                };
                let params =
                    vec![("x".into(), "tensor".into()), ("y".into(), "tensor".into()), ("c".into(), "f32".into())];
                (params, "tensor".to_string(), cx)
            }
            FnSig::Matrix => {
                self.feat("fn [r, c]");
                let cx = Cx {
                    at: Where::FnMatrix,
                    names: vec![Name { name: "x".into(), ty: Ty::M(Dim::R, Dim::C), mutable: false }],
                    base: Some(("x".into(), Ty::M(Dim::R, Dim::C))),
                    dims: vec![Dim::R, Dim::C],
                    global_ok: false,
                    has_step: false,
                };
                (vec![("x".into(), "[r, c]".into())], "[r, c]".to_string(), cx)
            }
        };
        let ret_ty = match sig {
            FnSig::Scalar => Ty::S,
            FnSig::Tensor => Ty::L,
            FnSig::Matrix => Ty::M(Dim::R, Dim::C),
        };
        let body = {
            let n = self.rng.below(3);
            self.block(&mut cx, n, 1, false)
        };
        let result = self.expr(&cx, ret_ty, 3);
        self.fns.push((name.clone(), sig));
        Func { name, params, ret, body, result }
    }

    fn update(&mut self, kind: Kind, single: bool) -> Update {
        let (pty, dims) = match kind {
            Kind::Any => (Ty::L, vec![]),
            Kind::Vector => (Ty::V(Dim::R), vec![Dim::R]),
            Kind::Matrix | Kind::Batched => (Ty::M(Dim::R, Dim::C), vec![Dim::R, Dim::C]),
        };
        let mut names = self.scalar_names(false);
        names.push(Name { name: "g".into(), ty: pty, mutable: false });
        names.push(Name { name: "p".into(), ty: pty, mutable: true });
        for s in self.states.clone() {
            let ty = match s.shape {
                Shape::Like => Some(pty),
                Shape::Scalar => Some(Ty::S),
                Shape::V(d) if dims.contains(&d) => Some(Ty::V(d)),
                Shape::M(x, y) if dims.contains(&x) && dims.contains(&y) => Some(Ty::M(x, y)),
                _ => None,
            };
            if let Some(ty) = ty {
                names.push(Name { name: s.name.clone(), ty, mutable: true });
            }
        }
        let mut cx = Cx {
            at: Where::Update(kind),
            names,
            base: Some(("g".into(), pty)),
            dims,
            global_ok: single,
            has_step: true,
        };
        let mut body = {
            let n = 2 + self.rng.below(4);
            self.block(&mut cx, n, 2, false)
        };
        // Every state this update sees is updated once at the top level (a contraction).
        let states: Vec<Name> = cx.names.iter().filter(|n| n.name.starts_with('s') && n.mutable).cloned().collect();
        for s in states {
            if self.rng.chance(3, 4) {
                let st = self.assign(&cx, &s);
                body.push(st);
            }
        }
        if self.rng.chance(1, 4) {
            body.push(Stmt::Assign("p".into(), "*=", a("(1 - (0.01 * lr))")));
        }
        let u = self.expr(&cx, pty, 3);
        let step = Expr::bin("*", a("lr"), soft(u));
        if self.rng.chance(1, 2) {
            body.push(Stmt::Assign("p".into(), "-=", step));
        } else {
            body.push(Stmt::Assign("p".into(), "=", Expr::bin("-", a("p"), step)));
        }
        Update { kind, body, precision: None }
    }

    /// An assignment of a mutable name by a bounded contraction.
    fn assign(&mut self, cx: &Cx, target: &Name) -> Stmt {
        let ty = if self.rng.chance(1, 5) { Ty::S } else { target.ty };
        let e = self.expr(cx, ty, 2);
        let t = a(&target.name);
        match self.rng.below(5) {
            0 => Stmt::Assign(target.name.clone(), "=", soft(e)),
            1 => Stmt::Assign(target.name.clone(), "=", Expr::call("lerp", vec![t, soft(e), a(self.rng.pick(LITS01))])),
            2 => {
                self.feat("+=");
                Stmt::Assign(target.name.clone(), "+=", Expr::bin("*", a("0.1"), soft(e)))
            }
            3 => {
                self.feat("*=");
                Stmt::Assign(target.name.clone(), "*=", Expr::call("clamp", vec![e, a("0.5"), a("1")]))
            }
            _ => {
                self.feat("/=");
                Stmt::Assign(
                    target.name.clone(),
                    "/=",
                    Expr::bin("+", a("1"), Expr::call("abs", vec![Expr::call("clamp", vec![e, a("-1"), a("1")])])),
                )
            }
        }
    }

    /// `n` statements; a nested block's names end with it.
    fn block(&mut self, cx: &mut Cx, n: usize, depth: u32, nested: bool) -> Vec<Stmt> {
        let mark = cx.names.len();
        let mut out = Vec::new();
        for _ in 0..n {
            self.stmt(cx, depth, nested, &mut out);
        }
        if nested {
            cx.names.truncate(mark);
        }
        out
    }

    fn types(&self, cx: &Cx) -> Vec<Ty> {
        let mut t = vec![Ty::S];
        if matches!(cx.at, Where::Update(Kind::Any) | Where::FnTensor) {
            t.push(Ty::L);
        }
        for &x in &cx.dims {
            t.push(Ty::V(x));
            for &y in &cx.dims {
                t.push(Ty::M(x, y));
            }
        }
        t
    }

    fn stmt(&mut self, cx: &mut Cx, depth: u32, nested: bool, out: &mut Vec<Stmt>) {
        let mutables: Vec<Name> = cx.names.iter().filter(|n| n.mutable).cloned().collect();
        // Nested blocks mostly assign what is declared outside them.
        let choice = if nested && !mutables.is_empty() && self.rng.chance(1, 2) { 6 } else { self.rng.below(12) };
        let s = match choice {
            0..=2 => {
                let tys = self.types(cx);
                let ty = *self.rng.pick(&tys);
                let e = self.expr(cx, ty, 3);
                let name = self.fresh("t");
                cx.names.push(Name { name: name.clone(), ty, mutable: false });
                Stmt::Let(name, e)
            }
            3 => {
                self.feat("let tuple");
                let tys = self.types(cx);
                let (t1, t2) = (*self.rng.pick(&tys), *self.rng.pick(&tys));
                let (e1, e2) = (self.expr(cx, t1, 2), self.expr(cx, t2, 2));
                let (n1, n2) = (self.fresh("t"), self.fresh("t"));
                cx.names.push(Name { name: n1.clone(), ty: t1, mutable: false });
                cx.names.push(Name { name: n2.clone(), ty: t2, mutable: false });
                Stmt::LetTuple(vec![n1, n2], vec![e1, e2])
            }
            4 | 5 => {
                let tys = self.types(cx);
                let ty = *self.rng.pick(&tys);
                let e = self.expr(cx, ty, 2);
                let name = self.fresh("v");
                cx.names.push(Name { name: name.clone(), ty, mutable: true });
                Stmt::Var(name, e)
            }
            6 | 7 if !mutables.is_empty() => {
                let t = self.rng.pick(&mutables).clone();
                self.assign(cx, &t)
            }
            8 if depth > 0 => {
                self.feat("if");
                let c = self.scalar_cond(cx);
                let then = {
                    let n = 1 + self.rng.below(2);
                    self.block(cx, n, depth - 1, true)
                };
                let other = if self.rng.chance(1, 2) {
                    self.feat("else");
                    {
                        let n = 1 + self.rng.below(2);
                        self.block(cx, n, depth - 1, true)
                    }
                } else {
                    vec![]
                };
                Stmt::If(c, then, other)
            }
            9 if depth > 0 && cx.has_step => {
                let periods: Vec<String> = self
                    .hypers
                    .iter()
                    .filter(|h| matches!(h.ty, HyperTy::IntRanged(lo) if lo >= 1))
                    .map(|h| h.name.clone())
                    .collect();
                let mut k = if !periods.is_empty() && self.rng.chance(1, 2) {
                    self.feat("every hyper");
                    self.rng.pick(&periods).clone()
                } else {
                    self.feat("every literal");
                    (1 + self.rng.below(3)).to_string()
                };
                if self.rng.chance(1, 3) {
                    self.feat("every at");
                    k = format!("{k} at {}", 1 + self.rng.below(4));
                }
                let body = {
                    let n = 1 + self.rng.below(2);
                    self.block(cx, n, depth - 1, true)
                };
                Stmt::Every(k, body)
            }
            10 | 11 if depth > 0 => self.for_loop(cx, depth, out),
            _ => {
                let tys = self.types(cx);
                let ty = *self.rng.pick(&tys);
                let e = self.expr(cx, ty, 3);
                let name = self.fresh("t");
                cx.names.push(Name { name: name.clone(), ty, mutable: false });
                Stmt::Let(name, e)
            }
        };
        out.push(s);
    }

    /// A `for` loop (returned), after the declaration of a Newton-Schulz iterate (pushed on
    /// `out`) when the loop is one.
    fn for_loop(&mut self, cx: &mut Cx, depth: u32, out: &mut Vec<Stmt>) -> Stmt {
        let bounds: Vec<String> = if cx.has_step {
            self.hypers.iter().filter(|h| matches!(h.ty, HyperTy::IntRanged(_))).map(|h| h.name.clone()).collect()
        } else {
            vec![]
        };
        let hi = if !bounds.is_empty() && self.rng.chance(1, 2) {
            self.feat("for to hyper");
            self.rng.pick(&bounds).clone()
        } else {
            self.feat("for literal");
            (1 + self.rng.below(3)).to_string()
        };
        let i = self.fresh("i");
        if !cx.dims.is_empty() && self.rng.chance(1, 3) {
            // A Newton-Schulz-like iteration on a normalised matrix (singular values below
            // 1, where the cubic converges).
            self.feat("newton-schulz loop");
            self.feat("@");
            self.feat(".T");
            let (x, y) = (*self.rng.pick(&cx.dims), *self.rng.pick(&cx.dims));
            let v = self.fresh("v");
            let init = nz(self.expr(cx, Ty::M(x, y), 1));
            out.push(Stmt::Var(v.clone(), init));
            let step = a(format!("((1.5 * {v}) - (0.5 * (({v} @ {v}.T) @ {v})))"));
            cx.names.push(Name { name: v.clone(), ty: Ty::M(x, y), mutable: true });
            return Stmt::For(i, 0, hi, vec![Stmt::Assign(v, "=", step)]);
        }
        let mark = cx.names.len();
        cx.names.push(Name { name: i.clone(), ty: Ty::S, mutable: false });
        let body = {
            let n = 1 + self.rng.below(2);
            self.block(cx, n, depth - 1, true)
        };
        cx.names.truncate(mark);
        Stmt::For(i, 0, hi, body)
    }

    /// A scalar bool that does not depend on values computed in two precisions.
    fn scalar_cond(&mut self, cx: &Cx) -> Expr {
        let mut opts: Vec<Expr> = vec![];
        if cx.has_step {
            let k = 1 + self.rng.below(4);
            opts.push(a(format!("(step > {k})")));
            opts.push(a(format!("(step <= {k})")));
            opts.push(a("((step % 2) == 0)"));
            opts.push(a(format!("(step != {k})")));
            opts.push(a(format!("(step >= {k})")));
            opts.push(a(format!("(step < {k})")));
            for h in &self.hypers {
                match h.ty {
                    HyperTy::Bool => {
                        opts.push(a(&h.name));
                        opts.push(a(format!("(!{})", h.name)));
                    }
                    HyperTy::F32 => opts.push(a(format!("({} > 0.4)", h.name))),
                    HyperTy::Int | HyperTy::IntRanged(_) => opts.push(a(format!("({} >= 2)", h.name))),
                }
            }
            if let Where::Update(kind) = cx.at {
                opts.push(a("(numel > 4)"));
                opts.push(a("has_role(bias, norm)"));
                opts.push(a("(rank < 2)"));
                opts.push(a("(inf_dims == 0)"));
                opts.push(a("(norm(g) > 1.5)"));
                if kind != Kind::Any {
                    opts.push(a("(rows > 3)"));
                }
                if matches!(kind, Kind::Matrix | Kind::Batched) {
                    opts.push(a("(cols == 2)"));
                    opts.push(a("(fan_in >= fan_out)"));
                }
            }
        } else {
            opts.push(a("true"));
            opts.push(a("false"));
        }
        let c = self.rng.pick(&opts).clone();
        self.feat("comparison");
        match self.rng.below(5) {
            0 => {
                self.feat("&&");
                let d = self.rng.pick(&opts).clone();
                Expr::bin("&&", c, d)
            }
            1 => {
                self.feat("||");
                let d = self.rng.pick(&opts).clone();
                Expr::bin("||", c, d)
            }
            2 => {
                self.feat("!");
                Expr::Un("!", Box::new(c))
            }
            _ => c,
        }
    }

    /// A bool of type `ty` for `where`: the gradient against thresholds (exact inputs), or a
    /// scalar condition.
    fn cond(&mut self, cx: &Cx, ty: Ty) -> Expr {
        let base = cx.base.clone().filter(|(n, t)| *t == ty && n == "g");
        match base {
            Some(_) if self.rng.chance(2, 3) => {
                self.feat("where on data");
                let c = match self.rng.below(4) {
                    0 => "(g > 0.3)",
                    1 => "(abs(g) < 0.5)",
                    2 => "((g > -0.5) && (g < 0.2))",
                    _ => "((g <= -0.6) || (g >= 0.6))",
                };
                a(c)
            }
            _ => self.scalar_cond(cx),
        }
    }

    fn leaf(&mut self, cx: &Cx, ty: Ty) -> Expr {
        let names: Vec<&Name> = cx.names.iter().filter(|n| n.ty == ty).collect();
        if ty == Ty::S {
            let mut opts: Vec<Expr> = names.iter().map(|n| a(&n.name)).collect();
            for _ in 0..3 {
                opts.push(a(self.rng.pick(LITS)));
            }
            if cx.has_step {
                opts.push(a("step"));
                opts.push(a("(1 / step)"));
            }
            if let Where::Update(kind) = cx.at {
                opts.push(a("(1 / numel)"));
                opts.push(a("width_mult"));
                opts.push(a("rank"));
                if kind != Kind::Any {
                    opts.push(a("sqrt(rows)"));
                }
                if matches!(kind, Kind::Matrix | Kind::Batched) {
                    opts.push(a("(cols / rows)"));
                    opts.push(a("(fan_in / (fan_out + 1))"));
                }
            }
            return self.rng.pick(&opts).clone();
        }
        if !names.is_empty() && self.rng.chance(4, 5) {
            return a(&self.rng.pick(&names).name);
        }
        let (b, bty) = cx.base.clone().expect("tensor code has a base tensor");
        if bty == ty {
            return a(&b);
        }
        match (bty, ty) {
            (Ty::M(r, c), Ty::V(d)) => {
                let red = *self.rng.pick(REDUCTIONS);
                self.feat(reduction_feature(red));
                self.feat("axis reduction");
                let tail = if d == r { ", axis = 1" } else { ", axis = 0" };
                let _ = c;
                Expr::Call(red.to_string(), vec![a(&b)], tail)
            }
            (Ty::M(r, _), Ty::M(x, y)) if x == y => {
                self.feat("@");
                self.feat(".T");
                if x == r {
                    a(format!("(({b} @ {b}.T) / (1 + norm({b})))"))
                } else {
                    a(format!("(({b}.T @ {b}) / (1 + norm({b})))"))
                }
            }
            (Ty::M(..), Ty::M(..)) => {
                self.feat(".T");
                a(format!("{b}.T"))
            }
            (Ty::V(_), Ty::M(..)) => {
                self.feat("outer");
                a(format!("outer({b}, {b})"))
            }
            _ => panic!("no leaf of {ty:?} from {bty:?}"),
        }
    }

    fn expr(&mut self, cx: &Cx, ty: Ty, d: u32) -> Expr {
        if d == 0 || self.rng.chance(1, 4) {
            return self.leaf(cx, ty);
        }
        match self.rng.below(12) {
            0..=3 => self.binary(cx, ty, d),
            4..=5 => self.unary(cx, ty, d),
            6 => {
                self.feat("where");
                let c = self.cond(cx, ty);
                let (x, y) = (self.expr(cx, ty, d - 1), self.expr(cx, ty, d - 1));
                Expr::call("where", vec![c, x, y])
            }
            7 => self.call_fn(cx, ty, d).unwrap_or_else(|| self.binary(cx, ty, d)),
            _ => self.structural(cx, ty, d).unwrap_or_else(|| self.binary(cx, ty, d)),
        }
    }

    fn binary(&mut self, cx: &Cx, ty: Ty, d: u32) -> Expr {
        // Operand types: equal, one a scalar, or vectors broadcast over a matrix.
        let (ta, tb) = match (ty, self.rng.below(4)) {
            (Ty::S, _) | (_, 0 | 1) => (ty, ty),
            (_, 2) => {
                if self.rng.chance(1, 2) {
                    (ty, Ty::S)
                } else {
                    (Ty::S, ty)
                }
            }
            (Ty::M(x, y), _) if x != y => {
                self.feat("broadcast");
                match self.rng.below(3) {
                    0 => (Ty::V(x), Ty::V(y)),
                    1 => (ty, Ty::V(x)),
                    _ => (Ty::V(y), ty),
                }
            }
            _ => (ty, ty),
        };
        let (x, y) = (self.expr(cx, ta, d - 1), self.expr(cx, tb, d - 1));
        let op = *self.rng.pick(&["+", "-", "*", "/", "min", "max", "lerp"]);
        self.feat(match op {
            "/" => "/",
            "min" => "min",
            "max" => "max",
            "lerp" => "lerp",
            "+" => "+",
            "-" => "-",
            _ => "*",
        });
        match op {
            "/" => Expr::bin("/", x, Expr::bin("+", Expr::call("abs", vec![y]), a("1"))),
            "min" | "max" => Expr::call(op, vec![x, y]),
            "lerp" => {
                let t = if self.rng.chance(1, 2) {
                    a(self.rng.pick(LITS01))
                } else {
                    let t = self.expr(cx, Ty::S, 1);
                    Expr::call("clamp", vec![t, a("0"), a("1")])
                };
                Expr::call("lerp", vec![x, y, t])
            }
            _ => Expr::bin(op, x, y),
        }
    }

    fn unary(&mut self, cx: &Cx, ty: Ty, d: u32) -> Expr {
        let x = self.expr(cx, ty, d - 1);
        let k = self.rng.below(13);
        let (f, e): (&'static str, Expr) = match k {
            0 => ("sqrt", Expr::call("sqrt", vec![Expr::call("abs", vec![x])])),
            1 => ("rsqrt", Expr::call("rsqrt", vec![Expr::bin("+", Expr::call("abs", vec![x]), a("1"))])),
            2 => ("exp", Expr::call("exp", vec![Expr::call("clamp", vec![x, a("-4"), a("4")])])),
            3 => ("log", Expr::call("log", vec![Expr::bin("+", Expr::call("abs", vec![x]), a("1"))])),
            4 => ("abs", Expr::call("abs", vec![x])),
            5 if self.rng.chance(1, 2) => {
                // sign of a leaf (exact on both backends)...
                let l = self.leaf(cx, ty);
                ("sign", Expr::call("sign", vec![l]))
            }
            5 => {
                // ... or of a momentum, Signum's `sign(lerp(m, g, t))`: it can cancel to an
                // exact float32 zero where float64 keeps a residue, which `verify::reconcile`
                // must tell from a disagreement (the float32-rounded reference explains it).
                let (l, r) = (self.leaf(cx, ty), self.leaf(cx, ty));
                let t = a(self.rng.pick(LITS01));
                ("sign of a momentum", Expr::call("sign", vec![Expr::call("lerp", vec![l, r, t])]))
            }
            6 => ("cos", Expr::call("cos", vec![x])),
            7 => ("negate", Expr::Un("-", Box::new(x))),
            8 => ("clamp", Expr::call("clamp", vec![x, a("-2"), a(self.rng.pick(&["0.5", "1", "3"]))])),
            9 => {
                let e = self.rng.pick(&["1.5", "0.5", "2", "-1", "3"]).to_string();
                ("^", Expr::bin("^", Expr::bin("+", Expr::call("abs", vec![x]), a("0.5")), a(&e)))
            }
            10 => {
                // fmod of a value in [1, 3] or [-3, -1] by 3.5 or 5: continuous there.
                let v = Expr::bin("+", Expr::call("clamp", vec![x, a("-1"), a("1")]), a("2"));
                let v = if self.rng.chance(1, 2) { Expr::Un("-", Box::new(v)) } else { v };
                ("%", Expr::bin("%", v, a(self.rng.pick(&["3.5", "5"]))))
            }
            11 if ty == Ty::S && cx.has_step => {
                // A decay rate to the power of the step, as in bias correction.
                ("^", Expr::bin("^", a(self.rng.pick(&["0.9", "0.5"])), a("step")))
            }
            _ => ("soft", soft(x)),
        };
        self.feat(f);
        e
    }

    fn call_fn(&mut self, cx: &Cx, ty: Ty, d: u32) -> Option<Expr> {
        let fns: Vec<(String, FnSig)> = self
            .fns
            .iter()
            .filter(|(_, s)| match s {
                FnSig::Scalar => ty == Ty::S,
                FnSig::Tensor => ty != Ty::S,
                // Not with a square matrix: binding `r` and `c` to one dimension makes a
                // vector broadcast against `[r, c]` in the body ambiguous, which the checker
                // refuses (E0005; dsl/tests/diagnostics/fn-square-broadcast.gd), and the
                // generator does not track which bodies broadcast.
                FnSig::Matrix => matches!(ty, Ty::M(x, y) if x != y),
            })
            .cloned()
            .collect();
        if fns.is_empty() {
            return None;
        }
        let (name, sig) = self.rng.pick(&fns).clone();
        self.feat("fn call");
        let args = match sig {
            FnSig::Scalar => vec![self.expr(cx, Ty::S, d - 1), self.expr(cx, Ty::S, d - 1)],
            FnSig::Tensor => vec![self.expr(cx, ty, d - 1), self.expr(cx, ty, d - 1), self.expr(cx, Ty::S, d - 1)],
            FnSig::Matrix => vec![nz(self.expr(cx, ty, d - 1))],
        };
        Some(Expr::call(&name, args))
    }

    /// Reductions (to a scalar or along an axis), matrix products, transposes, outer
    /// products and decompositions, and global reductions.
    fn structural(&mut self, cx: &Cx, ty: Ty, d: u32) -> Option<Expr> {
        let dims = cx.dims.clone();
        match ty {
            Ty::S => {
                let tys: Vec<Ty> = self.types(cx).into_iter().filter(|t| *t != Ty::S).collect();
                if tys.is_empty() {
                    return self.schedule(cx);
                }
                let t = *self.rng.pick(&tys);
                let x = self.expr(cx, t, d - 1);
                match self.rng.below(9) {
                    0..=3 => {
                        let r = *self.rng.pick(REDUCTIONS);
                        self.feat(reduction_feature(r));
                        if let Ty::V(_) = t {
                            if self.rng.chance(1, 3) {
                                self.feat("axis reduction");
                                return Some(Expr::Call(r.into(), vec![x], ", axis = 0"));
                            }
                        }
                        Some(Expr::call(r, vec![x]))
                    }
                    4 => {
                        self.feat("dot");
                        let y = self.expr(cx, t, d - 1);
                        Some(Expr::call("dot", vec![x, y]))
                    }
                    5 if cx.global_ok => {
                        let r = *self.rng.pick(&["global_norm", "global_sum", "global_max_abs"]);
                        self.feat(r);
                        Some(Expr::call(r, vec![x]))
                    }
                    _ => self.schedule(cx),
                }
            }
            Ty::L => None,
            Ty::V(v) => {
                let o = *self.rng.pick(&dims);
                match self.rng.below(4) {
                    0 => {
                        self.feat("axis reduction");
                        let r = *self.rng.pick(REDUCTIONS);
                        self.feat(reduction_feature(r));
                        let (m, tail) = if self.rng.chance(1, 2) {
                            (Ty::M(v, o), ", axis = 1")
                        } else {
                            (Ty::M(o, v), ", axis = 0")
                        };
                        let x = self.expr(cx, m, d - 1);
                        Some(Expr::Call(r.into(), vec![x], tail))
                    }
                    1 => {
                        self.feat("@");
                        let m = nz(self.expr(cx, Ty::M(v, o), d - 1));
                        let x = nz(self.expr(cx, Ty::V(o), d - 1));
                        Some(Expr::bin("@", m, x))
                    }
                    2 => {
                        self.feat("@");
                        let x = nz(self.expr(cx, Ty::V(o), d - 1));
                        let m = nz(self.expr(cx, Ty::M(o, v), d - 1));
                        Some(Expr::bin("@", x, m))
                    }
                    _ => {
                        self.feat("eigvals");
                        let s = self.sym(cx, v, d);
                        Some(self.precision(Expr::call("eigvals", vec![s])))
                    }
                }
            }
            Ty::M(x, y) => {
                let k = *self.rng.pick(&dims);
                match self.rng.below(if x == y { 8 } else { 4 }) {
                    0 => {
                        self.feat("@");
                        let l = nz(self.expr(cx, Ty::M(x, k), d - 1));
                        let r = nz(self.expr(cx, Ty::M(k, y), d - 1));
                        Some(Expr::bin("@", l, r))
                    }
                    1 => {
                        self.feat(".T");
                        Some(Expr::T(Box::new(nz(self.expr(cx, Ty::M(y, x), d - 1)))))
                    }
                    2 => {
                        self.feat("outer");
                        let l = nz(self.expr(cx, Ty::V(x), d - 1));
                        let r = nz(self.expr(cx, Ty::V(y), d - 1));
                        Some(Expr::call("outer", vec![l, r]))
                    }
                    3 if x != y => {
                        self.feat("broadcast");
                        Some(Expr::bin("*", self.expr(cx, Ty::V(x), d - 1), self.expr(cx, Ty::V(y), d - 1)))
                    }
                    4 => {
                        self.feat("eye");
                        let m = nz(self.expr(cx, ty, d - 1));
                        Some(Expr::call("eye", vec![m]))
                    }
                    5 | 6 => {
                        self.feat("inv_root");
                        let s = self.sym(cx, x, d);
                        let k = self.rng.pick(&["2", "4", "1"]).to_string();
                        Some(self.precision(Expr::call("inv_root", vec![s, a(&k)])))
                    }
                    _ => {
                        self.feat("qr");
                        let m = nz(self.expr(cx, ty, d - 1));
                        let w = Expr::bin("+", Expr::call("eye", vec![m.clone()]), Expr::bin("*", a("0.5"), m));
                        Some(self.precision(Expr::call("qr", vec![w])))
                    }
                }
            }
        }
    }

    fn precision(&mut self, e: Expr) -> Expr {
        match (e, self.rng.below(4)) {
            (Expr::Call(n, args, _), 0) => {
                self.feat("precision = f32");
                Expr::Call(n, args, ", precision = f32")
            }
            (Expr::Call(n, args, _), 1) => Expr::Call(n, args, ", precision = f64"),
            (e, _) => e,
        }
    }

    /// A well-damped symmetric positive definite `[x, x]` matrix: `X @ X.T + c * eye`.
    fn sym(&mut self, cx: &Cx, x: Dim, d: u32) -> Expr {
        let k = *self.rng.pick(&cx.dims);
        let m = nz(self.expr(cx, Ty::M(x, k), d.saturating_sub(2)));
        self.feat("@");
        self.feat(".T");
        self.feat("eye");
        let gram = Expr::bin("@", m.clone(), Expr::T(Box::new(m)));
        let c = self.rng.pick(&["1", "0.5", "2"]).to_string();
        Expr::bin("+", gram.clone(), Expr::bin("*", a(&c), Expr::call("eye", vec![gram])))
    }

    fn schedule(&mut self, cx: &Cx) -> Option<Expr> {
        if !cx.has_step {
            return None;
        }
        let (f, text) = match self.rng.below(6) {
            0 => ("ramp", "ramp(step, 1, 3, 0.5, 1)"),
            1 => ("cosine_ramp", "cosine_ramp(step, 0, 4, 1, 0.1)"),
            2 => ("power_ramp", "power_ramp(step, 1, 5, 1, 0, 2)"),
            3 => ("inv_sqrt", "inv_sqrt(step, 2, 1)"),
            4 => ("warmup_cosine", "warmup_cosine(step, 1, 2, 6, 0.1)"),
            _ => ("wsd", "wsd(step, 1, 1, 2, 3)"),
        };
        self.feat(f);
        Some(a(text))
    }
}

const LITS01: &[&str] = &["0.5", "0.1", "0.9", "0.25"];

/// The reductions drawn (each whole, or along an axis): one-argument `max` and `min` too.
const REDUCTIONS: &[&str] = &["sum", "mean", "norm", "max_abs", "max", "min"];

/// A reduction's feature name: `max`/`min` are also the elementwise functions' features.
fn reduction_feature(r: &'static str) -> &'static str {
    match r {
        "max" => "max reduction",
        "min" => "min reduction",
        r => r,
    }
}

fn dim_name(d: Dim) -> &'static str {
    match d {
        Dim::R => "rows",
        Dim::C => "cols",
    }
}
