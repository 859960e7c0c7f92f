//! The IR: one SSA dataflow function per entry point (the `prepare` block, and per update
//! variant its state initialisers and its step), instructions in an arena addressed by
//! typed handles, each with a type (a scalar or a tensor of a named shape) and an optional
//! guard (a boolean scalar; the instruction runs only when it holds).
//!
//! Control flow is gone by this stage: `if` and `every` became guards plus `select` merges,
//! `for` loops were unrolled, functions inlined. Every instruction defines one value except
//! stores, which write a state, the parameter or a global when the function ends.

pub mod print;
pub mod read;
pub mod verify;

use gdc_dsl::types::{Shape, Ty};
use std::fmt;
use std::marker::PhantomData;

/// A typed index into an arena.
pub struct Handle<T> {
    index: u32,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    pub fn new(index: usize) -> Self {
        Handle { index: index as u32, _marker: PhantomData }
    }
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, o: &Self) -> bool {
        self.index == o.index
    }
}
impl<T> Eq for Handle<T> {}
impl<T> PartialOrd for Handle<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Handle<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.index.cmp(&o.index)
    }
}
impl<T> std::hash::Hash for Handle<T> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.index.hash(h)
    }
}
impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.index)
    }
}
impl<T> fmt::Display for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.index)
    }
}

/// A value: the result of an instruction.
pub type Value = Handle<Inst>;

/// Unary elementwise math.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    Neg,
    Not,
    Sqrt,
    Rsqrt,
    Exp,
    Log,
    Abs,
    Sign,
    /// Cosine (radians): schedules' cosine decay.
    Cos,
}

/// Binary elementwise operations (broadcasting by named dimensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Min,
    Max,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    MaxAbs,
    /// The largest element (`max(x)`, `max(x, axis = 1)`; `min` is `-max(-x)`).
    Max,
}

impl ReduceKind {
    /// Folds a partial result `x` into the float64 accumulator `acc`: a sum, or a maximum
    /// (of magnitudes, or of values) that propagates NaN. Every backend combines its chunks'
    /// partials with it.
    pub fn fold(self, acc: f64, x: f64) -> f64 {
        match self {
            ReduceKind::Sum => acc + x,
            ReduceKind::MaxAbs | ReduceKind::Max if acc.is_nan() || x.is_nan() => f64::NAN,
            ReduceKind::MaxAbs | ReduceKind::Max => acc.max(x),
        }
    }

    /// What an accumulator starts from: 0 for a sum and a largest magnitude, -infinity for
    /// a largest element.
    pub fn identity(self) -> f64 {
        match self {
            ReduceKind::Sum | ReduceKind::MaxAbs => 0.0,
            ReduceKind::Max => f64::NEG_INFINITY,
        }
    }

    /// The float32 element an accumulator folds in: |x| for a largest magnitude, else x.
    pub fn operand(self, x: f64) -> f64 {
        match self {
            ReduceKind::MaxAbs => x.abs(),
            ReduceKind::Sum | ReduceKind::Max => x,
        }
    }

    /// The kind of reduction `v` (a sum unless it is a max-abs reduction).
    pub fn of(func: &Func, v: Value) -> ReduceKind {
        match func.inst(v).op {
            Op::Reduce(kind, _) => kind,
            _ => ReduceKind::Sum,
        }
    }
}

/// A shape-derived scalar of the parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShapeScalar {
    Numel,
    Rows,
    Cols,
    /// The parameter's rank (its number of dimensions as the training code gave them).
    Rank,
    /// muP's width multiplier: the fan-in dimension (`shape[1]`, or `shape[0]` of a
    /// vector) over the same dimension of the base shape; 1 without a base shape.
    WidthMult,
    /// How many dimensions differ from the base shape (muP's "infinite" dimensions: 2 for
    /// a hidden matrix, 1 for an embedding or a bias); 0 without a base shape.
    InfDims,
    /// 1 if the parameter's role is one of the roles in the mask (bit `Role as u8`), else 0.
    RoleIn(u8),
    /// The size of dimension `axis` of input `input` on this step (`batch` of
    /// `input a: [batch, cols]`).
    InputDim {
        input: u8,
        axis: u8,
    },
}

/// What a parameter is to the model, as the training code says: policies route by it, and
/// updates read it (`has_role(bias, norm)`) for decay masks and muP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// A hidden weight matrix.
    Hidden,
    Embedding,
    /// The output head (unembedding).
    Output,
    /// The first layer's weight.
    Input,
    Bias,
    /// A normalisation layer's gain or bias.
    Norm,
    /// Not said.
    #[default]
    Other,
}

impl Role {
    pub const ALL: [Role; 7] =
        [Role::Hidden, Role::Embedding, Role::Output, Role::Input, Role::Bias, Role::Norm, Role::Other];

    /// The role's name in `.gd` source and in golden cases.
    pub fn name(self) -> &'static str {
        match self {
            Role::Hidden => "hidden",
            Role::Embedding => "embedding",
            Role::Output => "output",
            Role::Input => "input",
            Role::Bias => "bias",
            Role::Norm => "norm",
            Role::Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// This role's bit in a role mask.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The names of the roles in `mask`, joined by `sep`.
    pub fn mask_names(mask: u8, sep: &str) -> String {
        Role::ALL.into_iter().filter(|r| mask & r.bit() != 0).map(Role::name).collect::<Vec<_>>().join(sep)
    }
}

/// Where a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Param,
    State(usize),
    Global(usize),
}

/// The precision a decomposition (`inv_root`, `eigvecs`, `eigvals`, `qr`) runs in on a
/// float32 backend, chosen in the source with `precision = f32 | f64`; float64 unless asked.
/// The interpreter always computes in float64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    #[default]
    F64,
}

/// How `inv_root` computes its root, chosen in the source with `method = eigh | newton`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RootMethod {
    /// Through a symmetric eigendecomposition (the default).
    #[default]
    Eigh,
    /// By the coupled Newton iteration (matrix products only; Distributed Shampoo's
    /// `_matrix_inverse_root_newton` with epsilon 0): with A the symmetric part of `m`,
    /// z = (k + 1) / (2 ||A||_F), X = z^(1/k) I, M = z A, then while max|M - I| is above
    /// [`RootMethod::newton_tolerance`] and fewer than [`RootMethod::NEWTON_MAX_ITERATIONS`]
    /// iterations ran: P = (1 + 1/k) I - M / k, X = X P, M = P^k M. The root is X,
    /// symmetrised. When k is not a whole number from 1 to 64, A is zero or not finite, or
    /// the iteration diverges or does not converge in time, the result is `Eigh`'s instead.
    Newton,
}

impl RootMethod {
    /// Newton iterations before falling back to the eigendecomposition.
    pub const NEWTON_MAX_ITERATIONS: usize = 100;

    /// max|M - I| at which the iteration has converged, in the precision it runs in: a few
    /// hundred units in the last place of float32 (Newton's error floor there), and 1e-10 in
    /// float64 (one more iteration reaches the roundoff).
    pub fn newton_tolerance(p: Precision) -> f64 {
        match p {
            Precision::F32 => 1e-4,
            Precision::F64 => 1e-10,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Const(f64),
    Bool(bool),
    Hyper(usize),
    /// The 1-based step number.
    Step,
    Shape(ShapeScalar),
    Global(usize),
    /// A value bound by `let` in the `prepare` block.
    PrepareOut(usize),
    Param,
    Grad,
    /// Input `i` of the step (`Module::inputs`), read only where its guard holds; an
    /// optional input's reads are guarded by its `Present`.
    Input(usize),
    /// Whether optional input `i` came with this parameter's step.
    Present(usize),
    Load(usize),
    Unary(Unary),
    Binary(Binary),
    /// `select(c, a, b)`: `a` where `c` holds, else `b` (elementwise when `c` is a tensor).
    Select,
    /// Repeats a value to the instruction's (larger) shape.
    Broadcast,
    /// The identity of the instruction's (square) shape.
    Eye,
    /// A reduction of a tensor to a scalar, or along an axis of a matrix.
    Reduce(ReduceKind, Option<usize>),
    /// The fold of a per-parameter scalar (a full reduction) over every parameter of the
    /// step, in binding order: `global_norm(g)` is `sqrt(across.sum(sum(g * g)))`. Engines
    /// compute it between the item that makes the reductions and the items that read it.
    AcrossParams(ReduceKind),
    /// `a @ b`, each operand optionally read transposed (`ta`, `tb`), as BLAS takes them.
    /// An optional third operand, a scalar, is the precision of the product (the bits of
    /// significand its operands keep: [`F32_BITS`], [`TF32_BITS`], [`BF16_BITS`]); without
    /// it the product is float32. It always accumulates in float32 (float64 in the
    /// interpreter).
    /// `sym`: the product is known to be symmetric (the `symmetry` pass proved it), so a
    /// backend may compute one triangle and mirror it (a SYRK-like product, half the work).
    MatMul {
        ta: bool,
        tb: bool,
        sym: bool,
    },
    Transpose,
    /// `outer(a, b)`: `[a] x [b] -> [a, b]`.
    Outer,
    /// `inv_root(m, k)`: m^(-1/k) of the symmetric part of `m`, on its numerical range:
    /// eigenvalues at or below n * eps * max eigenvalue (eps of the precision it runs in)
    /// give zero, a pseudo-inverse root, never NaN or infinity. `RootMethod` says how.
    InvRoot(Precision, RootMethod),
    /// `eigvecs(m)`, `eigvals(m)`: eigenvectors (columns) and eigenvalues of the symmetric
    /// part of `m`, eigenvalues ascending.
    Eigvecs(Precision),
    Eigvals(Precision),
    /// `eigvecs(m) @ sort_perm(eigvals(m))` from one decomposition (the `eigh_order` pass
    /// makes it from that idiom): the eigenvectors of the symmetric part of `m` as columns,
    /// ordered by eigenvalue (rounded to float32 on a float32 backend, as `eigvals` gives it)
    /// largest first, NaN last, ties in `eigvecs`' order.
    EigvecsDesc(Precision),
    /// `qr(m)`: the orthonormal factor of `m = Q R`, with R's diagonal non-negative.
    Qr(Precision),
    /// `sort_perm(key)`: the permutation matrix P, P[idx[j], j] = 1, with idx the order of
    /// `key` descending (ties in index order).
    SortPerm,
    /// `axis_min(acc)`: per-axis state (`[axes]`: one entry per index of each axis of the
    /// member's shape, axis after axis) to the parameter's shape, each element the smallest
    /// of its indices' entries. A parameter of rank 0 counts as one axis of length 1.
    AxisMin,
    /// `axis_max(x)`: the parameter's shape to `[axes]`, each entry the largest element of
    /// `x` with that index on that axis (NaN propagates).
    AxisMax,
    Store(Target),
}

impl Op {
    /// True for operations that are cheap per element and fuse into loops.
    pub fn is_elementwise(&self) -> bool {
        !matches!(
            self,
            Op::Reduce(..)
                | Op::MatMul { .. }
                | Op::Transpose
                | Op::Outer
                | Op::InvRoot(..)
                | Op::Eigvecs(_)
                | Op::Eigvals(_)
                | Op::EigvecsDesc(_)
                | Op::Qr(_)
                | Op::SortPerm
                | Op::AxisMin
                | Op::AxisMax
                | Op::Store(_)
        )
    }

    /// True for operations without side effects (everything but stores).
    pub fn is_pure(&self) -> bool {
        !matches!(self, Op::Store(_))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub op: Op,
    pub args: Vec<Value>,
    /// `None` for stores, which define no value.
    pub ty: Option<Ty>,
    pub guard: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuncKind {
    /// The `prepare` block: host scalars and globals only.
    Prepare,
    /// State initialisers of one update variant, run when a parameter is bound.
    Init,
    /// One step of one update variant.
    Update,
}

/// One function: instructions in definition order (every argument precedes its user).
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub kind: FuncKind,
    pub insts: Vec<Inst>,
}

impl Func {
    pub fn new(kind: FuncKind) -> Func {
        Func { kind, insts: Vec::new() }
    }

    pub fn inst(&self, v: Value) -> &Inst {
        &self.insts[v.index()]
    }

    pub fn ty(&self, v: Value) -> &Ty {
        self.insts[v.index()].ty.as_ref().expect("a value-defining instruction")
    }

    pub fn push(&mut self, inst: Inst) -> Value {
        self.insts.push(inst);
        Value::new(self.insts.len() - 1)
    }

    pub fn values(&self) -> impl Iterator<Item = Value> {
        (0..self.insts.len()).map(Value::new)
    }

    /// How many instructions use each value (as an argument or a guard).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.insts.len()];
        for inst in &self.insts {
            for a in inst.args.iter().chain(&inst.guard) {
                uses[a.index()] += 1;
            }
        }
        uses
    }

    /// Keeps the instructions for which `keep` holds, renumbering every reference.
    /// Kept instructions must not refer to dropped ones.
    pub fn retain(&mut self, keep: &[bool]) {
        let mut map = vec![usize::MAX; self.insts.len()];
        let mut out = Vec::new();
        for (i, inst) in self.insts.drain(..).enumerate() {
            if keep[i] {
                map[i] = out.len();
                out.push(inst);
            }
        }
        for inst in &mut out {
            for a in inst.args.iter_mut().chain(inst.guard.iter_mut()) {
                *a = Value::new(map[a.index()]);
            }
        }
        self.insts = out;
    }

    /// Replaces every use of each value `v` by `to[v]`.
    pub fn substitute(&mut self, to: &[Value]) {
        for inst in &mut self.insts {
            for a in inst.args.iter_mut().chain(inst.guard.iter_mut()) {
                *a = to[a.index()];
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HyperTy {
    F32,
    Int,
    Bool,
    /// The precision of matrix products (`hyper ns_precision = bf16`): one of
    /// [`F32_BITS`], [`TF32_BITS`], [`BF16_BITS`].
    Precision,
}

/// The precisions of matrix products as their operands' bits of significand (the values of
/// a precision hyperparameter; `gdc_dsl::builtins::PRECISIONS` names them).
pub use gdc_dsl::builtins::{BF16_BITS, F32_BITS, TF32_BITS};

/// The name of a precision (`bf16`), or `?` for a value that is none.
pub fn precision_name(bits: f64) -> &'static str {
    gdc_dsl::builtins::PRECISIONS.iter().find(|(_, b)| *b == bits).map_or("?", |(n, _)| n)
}

/// `x` rounded to `bits` bits of significand (8: bfloat16, 11: TF32, 24 or anything else:
/// unchanged), to nearest with ties to even, as hardware converts float32 to bfloat16:
/// what a product of that precision multiplies. NaN and infinities stay.
pub fn round_significand(x: f32, bits: f64) -> f32 {
    let drop = match bits {
        BF16_BITS => 16,
        TF32_BITS => 13,
        _ => return x,
    };
    if !x.is_finite() {
        return x;
    }
    let u = x.to_bits();
    let lsb = (u >> drop) & 1;
    let rounded = u.wrapping_add((1 << (drop - 1)) - 1 + lsb) & !((1u32 << drop) - 1);
    f32::from_bits(rounded)
}

#[derive(Clone, Debug, PartialEq)]
pub struct HyperInfo {
    pub name: String,
    pub ty: HyperTy,
    /// Booleans are 0 or 1.
    pub default: f64,
    pub range: Option<(f64, f64)>,
    /// `optional hyper`: NaN means unset (the default of `= none`).
    pub optional: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateInfo {
    pub name: String,
    /// Stored as bfloat16: each store rounds to nearest even, each load widens.
    pub bf16: bool,
    /// `Like` for state shaped like the parameter.
    pub shape: Shape,
}

/// A per-parameter tensor handed over with a step besides the gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct InputInfo {
    pub name: String,
    /// `Like` for an input shaped like the parameter; otherwise `rows`, `cols` and the
    /// input's own dimensions (any other name, sized by what the step hands over).
    pub shape: Shape,
    /// May be absent on a step (read only under its `Present` guard); a required input must
    /// come with every step whose plan reads it.
    pub optional: bool,
}

impl InputInfo {
    /// Whether dimension `name` is one of the parameter's (`rows`, `cols`).
    pub fn is_param_dim(name: &str) -> bool {
        name == "rows" || name == "cols"
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GlobalInfo {
    pub name: String,
    pub init: f64,
}

/// Which parameters an update variant takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `update(p, g)`: any shape.
    Any,
    /// `update(p: [rows], g)`: parameters of rank 1.
    Vector,
    /// `update(p: [rows, cols], g)`: parameters of rank 2 or more.
    Matrix,
    /// `update(p: [..., rows, cols], g)`: parameters of rank 2 or more, each a batch of
    /// `[rows, cols]` matrices over its leading dimensions. Binding splits such a parameter
    /// into one member per matrix (`interp::members`), so the IR sees one matrix.
    Batched,
}

impl Pattern {
    /// The shape of a parameter this variant updates.
    pub fn param_shape(self) -> Shape {
        match self {
            Pattern::Any => Shape::Like,
            Pattern::Vector => Shape::dims(&["rows"]),
            Pattern::Matrix | Pattern::Batched => Shape::dims(&["rows", "cols"]),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub pattern: Pattern,
    /// The routed optimizer this update belongs to (an index into `Module::optimizers`; 0
    /// in a file of one optimizer).
    pub optimizer: usize,
    pub init: Func,
    pub update: Func,
}

/// Which ranks a policy's route takes: `[rows]` vectors, `[rows, cols]` exactly two
/// dimensions, `[..., rows, cols]` two or more; `None` (no shape written) any rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankFilter {
    Vector,
    Matrix,
    AtLeastMatrix,
}

impl RankFilter {
    pub fn admits(self, rank: usize) -> bool {
        match self {
            RankFilter::Vector => rank == 1,
            RankFilter::Matrix => rank == 2,
            RankFilter::AtLeastMatrix => rank >= 2,
        }
    }
}

/// One line of a policy: parameters whose role is in `roles` (a mask of `Role::bit`s; 0:
/// any role) and whose rank `rank` admits go to optimizer `optimizer`. Routes are tried in
/// order; a file of one optimizer has none (everything goes to it).
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub roles: u8,
    pub rank: Option<RankFilter>,
    pub optimizer: usize,
}

impl Route {
    pub fn admits(&self, role: Role, rank: usize) -> bool {
        (self.roles == 0 || self.roles & role.bit() != 0) && self.rank.is_none_or(|r| r.admits(rank))
    }
}

/// A whole optimizer in IR form.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub name: String,
    pub hypers: Vec<HyperInfo>,
    pub states: Vec<StateInfo>,
    pub inputs: Vec<InputInfo>,
    pub globals: Vec<GlobalInfo>,
    pub prepare: Func,
    /// The `prepare` block's `let` bindings, visible to updates as `PrepareOut(i)`.
    pub prepare_outs: Vec<(String, Value)>,
    pub variants: Vec<Variant>,
    /// The optimizers a policy routes to, by name (one, the module's own, otherwise).
    pub optimizers: Vec<String>,
    /// A policy's routes, in order (empty for a file of one optimizer).
    pub routes: Vec<Route>,
}

impl Module {
    /// The functions of the module with a label each, in printing order.
    pub fn funcs(&self) -> Vec<(String, &Func)> {
        let mut out = vec![("prepare".to_string(), &self.prepare)];
        for v in &self.variants {
            let p = pattern_text(v.pattern);
            out.push((format!("init{p}"), &v.init));
            out.push((format!("update{p}"), &v.update));
        }
        out
    }

    pub fn funcs_mut(&mut self) -> Vec<&mut Func> {
        let mut out = vec![&mut self.prepare];
        for v in &mut self.variants {
            out.push(&mut v.init);
            out.push(&mut v.update);
        }
        out
    }
}

/// `(p)` or `(p: [rows, cols])`.
pub fn pattern_text(p: Pattern) -> &'static str {
    match p {
        Pattern::Any => "(p)",
        Pattern::Vector => "(p: [rows])",
        Pattern::Matrix => "(p: [rows, cols])",
        Pattern::Batched => "(p: [..., rows, cols])",
    }
}

/// `x` rounded to float32, then to bfloat16 (round to nearest, ties to even), as a bf16
/// state stores it; NaN stays NaN and infinities stay infinite.
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(x)) << 16)
}

/// The bfloat16 bits of `x`, rounded to nearest even (a NaN becomes the quiet NaN).
pub fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The float32 value of bfloat16 bits.
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// The result type of an operation from its arguments' types, by the language's shape
/// rules; `None` when they do not fit (the verifier reports it).
pub fn result_type(op: &Op, args: &[&Ty], declared: Option<&Ty>) -> Option<Ty> {
    use gdc_dsl::types::{self as t, Elem};
    let num = |s: Shape| Some(Ty::num(s));
    match op {
        Op::Const(_) | Op::Step | Op::Shape(_) | Op::Global(_) => Some(Ty::NUM),
        Op::AcrossParams(_) if args.first()?.is_scalar() => Some(Ty::NUM),
        Op::AcrossParams(_) => None,
        Op::Bool(_) | Op::Present(_) => Some(Ty::BOOL),
        Op::Hyper(_)
        | Op::PrepareOut(_)
        | Op::Param
        | Op::Grad
        | Op::Input(_)
        | Op::Load(_)
        | Op::Eye
        | Op::Broadcast
        | Op::AxisMin => declared.cloned(),
        Op::AxisMax => num(Shape::dims(&[gdc_dsl::builtins::AXES])),
        Op::Unary(Unary::Not) => Some((*args.first()?).clone()),
        Op::Unary(_) => num(args.first()?.shape.clone()),
        Op::Binary(b) => {
            let shape = t::broadcast(&args.first()?.shape, &args.get(1)?.shape).ok()?;
            let elem = match b {
                Binary::Eq | Binary::Ne | Binary::Lt | Binary::Le | Binary::Gt | Binary::Ge => Elem::Bool,
                Binary::And | Binary::Or => Elem::Bool,
                _ => Elem::Num,
            };
            Some(Ty { elem, shape })
        }
        Op::Select => {
            let s = t::broadcast(&args.first()?.shape, &args.get(1)?.shape).ok()?;
            let s = t::broadcast(&s, &args.get(2)?.shape).ok()?;
            Some(Ty { elem: args.get(1)?.elem, shape: s })
        }
        Op::Reduce(_, None) => Some(Ty::NUM),
        Op::Reduce(_, Some(axis)) => num(t::reduce_axis(&args.first()?.shape, *axis).ok()?),
        Op::MatMul { ta, tb, .. } => {
            let side = |s: &Shape, t: bool| if t { t::transpose(s).ok() } else { Some(s.clone()) };
            num(t::matmul(&side(&args.first()?.shape, *ta)?, &side(&args.get(1)?.shape, *tb)?).ok()?)
        }
        Op::Transpose => num(t::transpose(&args.first()?.shape).ok()?),
        Op::Outer => match (&args.first()?.shape, &args.get(1)?.shape) {
            (Shape::Dims(a), Shape::Dims(b)) if a.len() == 1 && b.len() == 1 => {
                num(Shape::Dims(vec![a[0].clone(), b[0].clone()]))
            }
            _ => None,
        },
        Op::Eigvecs(_) | Op::EigvecsDesc(_) => {
            args.first()?.shape.rank2().filter(|(a, b)| a == b).map(|_| (*args[0]).clone())
        }
        Op::Eigvals(_) => args.first()?.shape.rank2().filter(|(a, b)| a == b).map(|(a, _)| Ty::num(Shape::dims(&[a]))),
        Op::Qr(_) => args.first()?.shape.rank2().map(|_| (*args[0]).clone()),
        Op::SortPerm => match &args.first()?.shape {
            Shape::Dims(d) if d.len() == 1 => num(Shape::Dims(vec![d[0].clone(), d[0].clone()])),
            _ => None,
        },
        Op::InvRoot(..) => match (args.first()?.shape.rank2(), args.get(1)?.is_scalar()) {
            (Some((a, b)), true) if a == b => Some((*args.first()?).clone()),
            _ => None,
        },
        Op::Store(_) => None,
    }
}

/// The value of a unary operation on one element, in float64 (booleans are 0 or 1). The
/// interpreter and constant folding share it, so folding never changes a result.
pub fn eval_unary(u: Unary, x: f64) -> f64 {
    match u {
        Unary::Neg => -x,
        Unary::Not => f64::from(u8::from(x == 0.0)),
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Exp => x.exp(),
        Unary::Cos => x.cos(),
        Unary::Log => x.ln(),
        Unary::Abs => x.abs(),
        Unary::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
    }
}

/// The value of a binary operation on one pair of elements, in float64. `min` and `max`
/// propagate NaN (as PyTorch's `minimum`/`maximum` do); `%` is the remainder of truncating
/// division.
pub fn eval_binary(b: Binary, x: f64, y: f64) -> f64 {
    let bool = |c: bool| f64::from(u8::from(c));
    match b {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Rem => x % y,
        Binary::Pow => x.powf(y),
        Binary::Min => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        }
        Binary::Max => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.max(y)
            }
        }
        Binary::Eq => bool(x == y),
        Binary::Ne => bool(x != y),
        Binary::Lt => bool(x < y),
        Binary::Le => bool(x <= y),
        Binary::Gt => bool(x > y),
        Binary::Ge => bool(x >= y),
        Binary::And => bool(x != 0.0 && y != 0.0),
        Binary::Or => bool(x != 0.0 || y != 0.0),
    }
}
