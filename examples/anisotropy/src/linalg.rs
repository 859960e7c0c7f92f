//! Small dense float64 matrices: products, orthonormalisation and symmetric eigenvalues, for the
//! problem's construction and its exact metrics (the model itself trains in candle, float32).

/// A row-major `rows × cols` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat { rows, cols, data: vec![0.0; rows * cols] }
    }

    pub fn eye(n: usize) -> Mat {
        let mut m = Mat::zeros(n, n);
        for i in 0..n {
            m.data[i * n + i] = 1.0;
        }
        m
    }

    /// Entries from `f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f64) -> Mat {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Mat { rows, cols, data }
    }

    /// From float32 row-major values (a candle variable read back).
    pub fn from_f32(rows: usize, cols: usize, v: &[f32]) -> Mat {
        assert_eq!(v.len(), rows * cols, "a {rows}x{cols} matrix needs {} values", rows * cols);
        Mat { rows, cols, data: v.iter().map(|&x| x as f64).collect() }
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    pub fn set(&mut self, i: usize, j: usize, x: f64) {
        self.data[i * self.cols + j] = x;
    }

    pub fn t(&self) -> Mat {
        Mat::from_fn(self.cols, self.rows, |i, j| self.at(j, i))
    }

    pub fn matmul(&self, b: &Mat) -> Mat {
        assert_eq!(self.cols, b.rows, "matmul {}x{} by {}x{}", self.rows, self.cols, b.rows, b.cols);
        let mut out = Mat::zeros(self.rows, b.cols);
        for i in 0..self.rows {
            for l in 0..self.cols {
                let a = self.at(i, l);
                if a == 0.0 {
                    continue;
                }
                let row = &b.data[l * b.cols..(l + 1) * b.cols];
                let o = &mut out.data[i * b.cols..(i + 1) * b.cols];
                for (o, &x) in o.iter_mut().zip(row) {
                    *o += a * x;
                }
            }
        }
        out
    }

    pub fn sub(&self, b: &Mat) -> Mat {
        assert_eq!((self.rows, self.cols), (b.rows, b.cols));
        Mat { rows: self.rows, cols: self.cols, data: self.data.iter().zip(&b.data).map(|(x, y)| x - y).collect() }
    }

    pub fn trace(&self) -> f64 {
        (0..self.rows.min(self.cols)).map(|i| self.at(i, i)).sum()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }
}

/// An orthonormal basis of the column space of `a` (modified Gram–Schmidt, run twice for
/// stability): a `rows × r` matrix, `r` the numerical rank (columns whose remainder falls
/// under `1e-10` of their norm are dropped).
pub fn orthonormal_columns(a: &Mat) -> Mat {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for j in 0..a.cols {
        let mut v: Vec<f64> = (0..a.rows).map(|i| a.at(i, j)).collect();
        let norm0 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for _ in 0..2 {
            for q in &basis {
                let d: f64 = q.iter().zip(&v).map(|(x, y)| x * y).sum();
                for (vi, qi) in v.iter_mut().zip(q) {
                    *vi -= d * qi;
                }
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm0 > 0.0 && norm > 1e-10 * norm0 {
            basis.push(v.into_iter().map(|x| x / norm).collect());
        }
    }
    Mat::from_fn(a.rows, basis.len(), |i, j| basis[j][i])
}

/// The eigenvalues of the symmetric matrix `a`, largest first (cyclic Jacobi).
pub fn sym_eigvals(a: &Mat) -> Vec<f64> {
    assert_eq!(a.rows, a.cols, "eigenvalues of a square matrix");
    let n = a.rows;
    let mut m = a.clone();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m.at(i, j).powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| m.at(i, i).powi(2)).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m.at(p, q);
                if apq == 0.0 {
                    continue;
                }
                let theta = (m.at(q, q) - m.at(p, p)) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (m.at(k, p), m.at(k, q));
                    m.set(k, p, c * akp - s * akq);
                    m.set(k, q, s * akp + c * akq);
                }
                for k in 0..n {
                    let (apk, aqk) = (m.at(p, k), m.at(q, k));
                    m.set(p, k, c * apk - s * aqk);
                    m.set(q, k, s * apk + c * aqk);
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| m.at(i, i)).collect();
    ev.sort_by(|a, b| b.total_cmp(a));
    ev
}

/// The spectral norm of `a` (the square root of the largest eigenvalue of `aᵀa`).
pub fn spectral_norm(a: &Mat) -> f64 {
    let gram = if a.cols <= a.rows { a.t().matmul(a) } else { a.matmul(&a.t()) };
    sym_eigvals(&gram).first().copied().unwrap_or(0.0).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 3 and 1.
        let a = Mat { rows: 2, cols: 2, data: vec![2.0, 1.0, 1.0, 2.0] };
        let ev = sym_eigvals(&a);
        assert!((ev[0] - 3.0).abs() < 1e-12 && (ev[1] - 1.0).abs() < 1e-12, "{ev:?}");
    }

    #[test]
    fn gram_schmidt_gives_orthonormal_columns() {
        let a = Mat::from_fn(5, 3, |i, j| ((i * 7 + j * 3) % 5) as f64 + if i == j { 2.0 } else { 0.0 });
        let q = orthonormal_columns(&a);
        assert_eq!((q.rows, q.cols), (5, 3));
        let g = q.t().matmul(&q);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g.at(i, j) - want).abs() < 1e-12);
            }
        }
        assert!((spectral_norm(&q) - 1.0).abs() < 1e-12);
    }
}
