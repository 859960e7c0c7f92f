//! Types and the shape algebra of the language, shared by the checker and the lowering so
//! both agree on broadcasting, matrix products and reductions.
//!
//! A shape is a scalar, `Like` (the parameter's own shape, any rank, opaque), or a list of
//! named dimensions (`[rows, cols]`, or a function's own names such as `[r, c]`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Scalar,
    /// The parameter's shape, whatever its rank; also the shape of a `tensor` argument.
    Like,
    Dims(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    Num,
    Bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    pub elem: Elem,
    pub shape: Shape,
}

impl Ty {
    pub const NUM: Ty = Ty { elem: Elem::Num, shape: Shape::Scalar };
    pub const BOOL: Ty = Ty { elem: Elem::Bool, shape: Shape::Scalar };

    pub fn num(shape: Shape) -> Ty {
        Ty { elem: Elem::Num, shape }
    }

    pub fn is_scalar(&self) -> bool {
        self.shape == Shape::Scalar
    }
}

impl Shape {
    pub fn dims(names: &[&str]) -> Shape {
        Shape::Dims(names.iter().map(|s| s.to_string()).collect())
    }

    /// `[]` is the scalar shape.
    pub fn from_names(names: Vec<String>) -> Shape {
        if names.is_empty() {
            Shape::Scalar
        } else {
            Shape::Dims(names)
        }
    }

    pub fn rank2(&self) -> Option<(&str, &str)> {
        match self {
            Shape::Dims(d) if d.len() == 2 => Some((&d[0], &d[1])),
            _ => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Scalar => write!(f, "scalar"),
            Shape::Like => write!(f, "like(p)"),
            Shape::Dims(d) => write!(f, "[{}]", d.join(", ")),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.elem, &self.shape) {
            (Elem::Num, Shape::Scalar) => write!(f, "f32"),
            (Elem::Bool, Shape::Scalar) => write!(f, "bool"),
            (Elem::Num, s) => write!(f, "{s}"),
            (Elem::Bool, s) => write!(f, "bool {s}"),
        }
    }
}

/// Why two shapes do not combine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeError {
    Mismatch(String),
    /// The operation needs named dimensions, but the value only has the parameter's shape.
    NeedsMatrix(String),
    /// Per-axis state (`[axes]`) met another shape.
    PerAxis(String),
}

/// The shape of an elementwise operation on two operands: a scalar goes with anything;
/// equal shapes stay; a vector over one dimension of a matrix is repeated along the other;
/// two vectors over different dimensions form their outer product, left dimension first.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, ShapeError> {
    use Shape::*;
    let mismatch = || ShapeError::Mismatch(format!("{a} and {b} do not broadcast"));
    let per_axis = |s: &Shape| matches!(s, Dims(d) if d.iter().any(|n| n == crate::builtins::AXES));
    match (a, b) {
        (Scalar, s) | (s, Scalar) => Ok(s.clone()),
        _ if a == b => Ok(a.clone()),
        _ if per_axis(a) || per_axis(b) => Err(ShapeError::PerAxis(format!(
            "{a} and {b} do not broadcast: per-axis state `[axes]` meets the parameter's shape only through `axis_min` and `axis_max`"
        ))),
        (Like, _) | (_, Like) => Err(mismatch()),
        (Dims(x), Dims(y)) => match (x.len(), y.len()) {
            (1, 1) => Ok(Dims(vec![x[0].clone(), y[0].clone()])),
            (1, 2) | (2, 1) => {
                let (v, m) = if x.len() == 1 { (x, y) } else { (y, x) };
                if m[0] == m[1] {
                    Err(ShapeError::Mismatch(format!(
                        "{a} and {b}: a vector over `{}` is ambiguous against a square matrix",
                        v[0]
                    )))
                } else if m.contains(&v[0]) {
                    Ok(Dims(m.clone()))
                } else {
                    Err(mismatch())
                }
            }
            _ => Err(mismatch()),
        },
    }
}

/// `a @ b`: `[m, k] @ [k, n] = [m, n]`, `[m, k] @ [k] = [m]`, `[k] @ [k, n] = [n]`.
pub fn matmul(a: &Shape, b: &Shape) -> Result<Shape, ShapeError> {
    let (x, y) = match (a, b) {
        (Shape::Dims(x), Shape::Dims(y)) => (x, y),
        (Shape::Like, _) | (_, Shape::Like) => return Err(ShapeError::NeedsMatrix("`@`".into())),
        _ => return Err(ShapeError::Mismatch(format!("`@` needs two tensors, got {a} and {b}"))),
    };
    let inner_ok = x.last() == y.first();
    let out = match (x.len(), y.len()) {
        (2, 2) if inner_ok => vec![x[0].clone(), y[1].clone()],
        (2, 1) if inner_ok => vec![x[0].clone()],
        (1, 2) if inner_ok => vec![y[1].clone()],
        _ => {
            return Err(ShapeError::Mismatch(format!(
                "{a} @ {b}: the inner dimensions `{}` and `{}` differ",
                x.last().map_or("?", |s| s),
                y.first().map_or("?", |s| s)
            )))
        }
    };
    Ok(Shape::Dims(out))
}

/// `m.T` of a matrix.
pub fn transpose(a: &Shape) -> Result<Shape, ShapeError> {
    match a {
        Shape::Dims(d) if d.len() == 2 => Ok(Shape::Dims(vec![d[1].clone(), d[0].clone()])),
        Shape::Like => Err(ShapeError::NeedsMatrix("`.T`".into())),
        _ => Err(ShapeError::Mismatch(format!("`.T` needs a matrix, got {a}"))),
    }
}

/// A reduction along `axis` of a matrix: axis 0 sums over rows (leaving `[cols]`), axis 1
/// over columns (leaving `[rows]`).
pub fn reduce_axis(a: &Shape, axis: usize) -> Result<Shape, ShapeError> {
    match a {
        Shape::Dims(d) if d.len() == 2 && axis < 2 => Ok(Shape::Dims(vec![d[1 - axis].clone()])),
        Shape::Dims(d) if d.len() == 1 && axis == 0 => Ok(Shape::Scalar),
        Shape::Like => Err(ShapeError::NeedsMatrix("a reduction along an axis".into())),
        _ => Err(ShapeError::Mismatch(format!("axis {axis} does not exist in {a}"))),
    }
}
