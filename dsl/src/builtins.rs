//! The built-in names and functions of the language, in one table, so the checker, the
//! lowering and the documentation agree on what exists.

/// How a built-in function computes its result's shape from its arguments'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Elementwise over broadcast arguments, numbers in, numbers out.
    Elementwise,
    /// `where(cond, a, b)`: a boolean condition, then two numbers.
    Where,
    /// A reduction to a scalar per tensor, or along `axis = 0 | 1` of a matrix.
    Reduce,
    /// `dot(a, b)`: the sum of the elementwise product of two same-shaped tensors.
    Dot,
    /// `eye(m)`: the identity shaped like the square matrix `m`.
    Eye,
    /// `outer(a, b)`: the outer product of two vectors, `[a] x [b] -> [a, b]`.
    Outer,
    /// `inv_root(m, k)`: the inverse k-th root of a symmetric positive semi-definite matrix.
    InvRoot,
    /// `eigvecs(m)`, `eigvals(m)`: the eigendecomposition of a symmetric matrix.
    Eigvecs,
    Eigvals,
    /// `qr(m)`: the orthonormal factor of a matrix.
    Qr,
    /// `sort_perm(key)`: the permutation matrix that orders a vector's entries descending.
    SortPerm,
    /// A schedule (`ramp`, `cosine_ramp`, `warmup_cosine`, ...): scalars in, a scalar out,
    /// best called in `prepare` so it is evaluated once per step on the host.
    Schedule,
    /// `global_norm(x)`, `global_sum(x)`, `global_max_abs(x)`: a reduction over every
    /// parameter of the step, not just this one (a global stage, such as clipping).
    Global,
    /// `has_role(bias, norm)`: whether the parameter's role is one of the named ones.
    HasRole,
    /// `present(h)`: whether the optional input `h` came with this step.
    Present,
    /// `axis_min(acc)`: per-axis state (`[axes]`) to the parameter's shape, each element the
    /// smallest of its indices' entries; `axis_max(x)`: the parameter's shape to `[axes]`,
    /// each entry the largest element with that index on that axis (SM3's cover).
    AxisMin,
    AxisMax,
}

#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub arity: usize,
    pub kind: Kind,
    pub doc: &'static str,
}

pub const FUNCTIONS: &[Builtin] = &[
    Builtin { name: "sqrt", arity: 1, kind: Kind::Elementwise, doc: "square root" },
    Builtin { name: "rsqrt", arity: 1, kind: Kind::Elementwise, doc: "1 / sqrt(x)" },
    Builtin { name: "exp", arity: 1, kind: Kind::Elementwise, doc: "e^x" },
    Builtin { name: "log", arity: 1, kind: Kind::Elementwise, doc: "natural logarithm" },
    Builtin { name: "abs", arity: 1, kind: Kind::Elementwise, doc: "absolute value" },
    Builtin { name: "sign", arity: 1, kind: Kind::Elementwise, doc: "-1, 0 or 1 (0 for 0)" },
    Builtin { name: "cos", arity: 1, kind: Kind::Elementwise, doc: "cosine (radians)" },
    Builtin { name: "min", arity: 2, kind: Kind::Elementwise, doc: "the smaller of two" },
    Builtin { name: "max", arity: 2, kind: Kind::Elementwise, doc: "the larger of two" },
    Builtin { name: "clamp", arity: 3, kind: Kind::Elementwise, doc: "clamp(x, lo, hi) = min(max(x, lo), hi)" },
    Builtin { name: "lerp", arity: 3, kind: Kind::Elementwise, doc: "lerp(a, b, t) = a + t * (b - a)" },
    Builtin { name: "where", arity: 3, kind: Kind::Where, doc: "where(c, a, b): a where c holds, else b" },
    Builtin { name: "sum", arity: 1, kind: Kind::Reduce, doc: "sum of the elements" },
    Builtin { name: "mean", arity: 1, kind: Kind::Reduce, doc: "mean of the elements" },
    Builtin { name: "norm", arity: 1, kind: Kind::Reduce, doc: "Euclidean (Frobenius) norm" },
    Builtin { name: "max_abs", arity: 1, kind: Kind::Reduce, doc: "largest absolute value" },
    Builtin { name: "dot", arity: 2, kind: Kind::Dot, doc: "sum of the elementwise product" },
    Builtin { name: "eye", arity: 1, kind: Kind::Eye, doc: "identity shaped like a square matrix" },
    Builtin {
        name: "axis_min",
        arity: 1,
        kind: Kind::AxisMin,
        doc: "axis_min(acc)[i, j, ...] = min(acc's entry for i on axis 0, for j on axis 1, ...) for per-axis state acc: [axes]",
    },
    Builtin {
        name: "axis_max",
        arity: 1,
        kind: Kind::AxisMax,
        doc: "axis_max(x): per axis and index, the largest element of x with that index on that axis (shape [axes])",
    },
    Builtin { name: "outer", arity: 2, kind: Kind::Outer, doc: "outer(a, b)[i, j] = a[i] * b[j] for vectors a, b" },
    Builtin {
        name: "eigvecs",
        arity: 1,
        kind: Kind::Eigvecs,
        doc: "eigvecs(m): the eigenvectors of a symmetric matrix, as orthonormal columns, eigenvalues ascending",
    },
    Builtin { name: "eigvals", arity: 1, kind: Kind::Eigvals, doc: "eigvals(m): the eigenvalues of a symmetric matrix, ascending" },
    Builtin {
        name: "qr",
        arity: 1,
        kind: Kind::Qr,
        doc: "qr(m): Q of m = Q R, orthonormal columns, R's diagonal non-negative (Householder)",
    },
    Builtin {
        name: "sort_perm",
        arity: 1,
        kind: Kind::SortPerm,
        doc: "sort_perm(key): the permutation P with key's largest entry first: x @ P reorders x's columns, P.T @ x its rows",
    },
    Builtin {
        name: "inv_root",
        arity: 2,
        kind: Kind::InvRoot,
        doc: "inv_root(m, k) = m^(-1/k) for a symmetric positive semi-definite m, on its numerical range (eigenvalues at or below n * eps * max give 0)",
    },
    Builtin {
        name: "ramp",
        arity: 5,
        kind: Kind::Schedule,
        doc: "ramp(t, t0, t1, v0, v1): v0 until t0, linear to v1 at t1, v1 after",
    },
    Builtin {
        name: "cosine_ramp",
        arity: 5,
        kind: Kind::Schedule,
        doc: "cosine_ramp(t, t0, t1, v0, v1): v0 until t0, a half cosine to v1 at t1, v1 after",
    },
    Builtin {
        name: "power_ramp",
        arity: 6,
        kind: Kind::Schedule,
        doc: "power_ramp(t, t0, t1, v0, v1, power): v1 + (v0 - v1) * (1 - f)^power, f the fraction of t0..t1 passed",
    },
    Builtin {
        name: "inv_sqrt",
        arity: 3,
        kind: Kind::Schedule,
        doc: "inv_sqrt(t, t0, v0): v0 until t0, then v0 * sqrt(t0 / t)",
    },
    Builtin {
        name: "warmup_cosine",
        arity: 5,
        kind: Kind::Schedule,
        doc: "warmup_cosine(t, peak, warmup, decay_steps, end): linear 0 to peak over warmup, cosine to end at decay_steps (optax's warmup_cosine_decay_schedule)",
    },
    Builtin {
        name: "wsd",
        arity: 5,
        kind: Kind::Schedule,
        doc: "wsd(t, peak, warmup, stable, decay): linear 0 to peak over warmup, peak for stable steps, linear to 0 over decay",
    },
    Builtin {
        name: "global_norm",
        arity: 1,
        kind: Kind::Global,
        doc: "global_norm(x): the Euclidean norm of x over every parameter of the step",
    },
    Builtin {
        name: "global_sum",
        arity: 1,
        kind: Kind::Global,
        doc: "global_sum(x): the sum of x's elements over every parameter of the step",
    },
    Builtin {
        name: "global_max_abs",
        arity: 1,
        kind: Kind::Global,
        doc: "global_max_abs(x): the largest |x| over every parameter of the step",
    },
    Builtin {
        name: "has_role",
        arity: 1,
        kind: Kind::HasRole,
        doc: "has_role(bias, norm): whether the parameter's role is one of these (hidden, embedding, output, input, bias, norm, other)",
    },
    Builtin {
        name: "present",
        arity: 1,
        kind: Kind::Present,
        doc: "present(h): whether the optional input h came with this parameter's step (read h only under `if present(h)`)",
    },
];

/// The roles a parameter can have, as written in `has_role(...)` and in policies.
pub const ROLES: &[&str] = &["hidden", "embedding", "output", "input", "bias", "norm", "other"];

pub fn function(name: &str) -> Option<&'static Builtin> {
    FUNCTIONS.iter().find(|b| b.name == name)
}

/// Whether `name` is the built-in function of `kind` (a user function may be named
/// `global_scale`; it is not a global reduction).
pub fn is(name: &str, kind: Kind) -> bool {
    function(name).is_some_and(|b| b.kind == kind)
}

/// `max` and `min` with one positional argument: reductions, as numpy's `max(x, axis = 1)`
/// (two arguments compare elementwise).
pub const EXTREMA: [Builtin; 2] = [
    Builtin {
        name: "max",
        arity: 1,
        kind: Kind::Reduce,
        doc: "max(x): the largest element; max(x, axis = 0 | 1) along an axis; max(a, b) the larger of two",
    },
    Builtin {
        name: "min",
        arity: 1,
        kind: Kind::Reduce,
        doc: "min(x): the smallest element; min(x, axis = 0 | 1) along an axis; min(a, b) the smaller of two",
    },
];

/// The reduction form of `max`/`min` when called with `positional` positional arguments.
pub fn reduction_form(name: &str, positional: usize) -> Option<&'static Builtin> {
    EXTREMA.iter().find(|b| b.name == name && positional == 1)
}

/// Scalars every update can read. `rows`, `cols`, `fan_in` and `fan_out` need a matrix
/// parameter: `rows` is its first dimension, `cols` the product of the others,
/// `fan_in = cols` and `fan_out = rows` (PyTorch's convention for a `[out, in]` weight).
/// `rank`, `width_mult` and `inf_dims` (muP: the fan-in over the base shape's, and how many
/// dimensions differ from the base shape) exist for every parameter.
pub const SHAPE_SCALARS: &[&str] = &["numel", "rows", "cols", "fan_in", "fan_out", "rank", "width_mult", "inf_dims"];

/// The shape scalars every update can read, whatever its pattern.
pub const ANY_RANK_SCALARS: &[&str] = &["numel", "rank", "width_mult", "inf_dims"];

/// Names that only mean something as a state initialiser: `zeros`, `eye`.
pub const INIT_NAMES: &[&str] = &["zeros", "eye"];

/// Dimension names a state shape may use.
pub const DIMS: &[&str] = &["rows", "cols"];

/// The dimension of per-axis state (`state acc: [axes]`): one entry per index of each axis
/// of the parameter, axis after axis (a `[3, 4, 5]` parameter has 3 + 4 + 5). It stands alone
/// in a shape and meets the parameter's shape only through `axis_min` and `axis_max`.
pub const AXES: &str = "axes";

/// The precisions of matrix products as the bits of significand a product's operands keep
/// (products accumulate in float32 always): the value a precision hyperparameter holds.
pub const F32_BITS: f64 = 24.0;
pub const TF32_BITS: f64 = 11.0;
pub const BF16_BITS: f64 = 8.0;

/// The precisions' names (`with precision = bf16 { ... }`, `hyper ns_precision = bf16`).
pub const PRECISIONS: [(&str, f64); 3] = [("f32", F32_BITS), ("tf32", TF32_BITS), ("bf16", BF16_BITS)];

/// The run-time value of a precision's name (`bf16` -> 8), if it is one.
pub fn precision_value(name: &str) -> Option<f64> {
    PRECISIONS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}
