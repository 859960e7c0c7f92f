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
];

pub fn function(name: &str) -> Option<&'static Builtin> {
    FUNCTIONS.iter().find(|b| b.name == name)
}

/// Scalars every update can read. `rows`, `cols`, `fan_in` and `fan_out` need a matrix
/// parameter: `rows` is its first dimension, `cols` the product of the others,
/// `fan_in = cols` and `fan_out = rows` (PyTorch's convention for a `[out, in]` weight).
pub const SHAPE_SCALARS: &[&str] = &["numel", "rows", "cols", "fan_in", "fan_out"];

/// Names that only mean something as a state initialiser: `zeros`, `eye`.
pub const INIT_NAMES: &[&str] = &["zeros", "eye"];

/// Dimension names a state shape may use.
pub const DIMS: &[&str] = &["rows", "cols"];
