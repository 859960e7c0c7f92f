//! The planted linear representation-learning problem: y = F*·G*·x + ε with x = Σ^{1/2}·u, u
//! uniform on {±1}^dx, and its exact metrics (population excess risk, subspace distance).

use crate::linalg::{orthonormal_columns, spectral_norm, Mat};
use gdc_train_kit::Rng;

/// The problem's sizes and noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    /// Input dimension.
    pub dx: usize,
    /// Feature (hidden) dimension: G* has `k` orthonormal rows.
    pub k: usize,
    /// Output dimension.
    pub dy: usize,
    /// Standard deviation of each output's Gaussian noise ε.
    pub noise: f64,
}

impl Default for Dims {
    fn default() -> Dims {
        Dims { dx: 32, k: 4, dy: 8, noise: 0.001 }
    }
}

/// One instance: Σ = V·diag(λ)·Vᵀ with λ geometrically spaced from 1 down to 1/κ and V a random
/// orthonormal basis; G* ∈ R^{k×dx} with random orthonormal rows; F* ∈ R^{dy×k} with
/// independent N(0, 1/k) entries.
#[derive(Clone, Debug)]
pub struct Problem {
    pub dims: Dims,
    pub kappa: f64,
    pub sigma: Mat,
    pub sigma_half: Mat,
    pub g_star: Mat,
    pub f_star: Mat,
    /// F*·G*, [dy, dx].
    pub m_star: Mat,
    /// I − G*ᵀG*, the projector onto the complement of G*'s row space, [dx, dx].
    pub complement: Mat,
}

/// A random `n × n` orthogonal matrix (Gram–Schmidt on a Gaussian matrix).
fn random_orthogonal(n: usize, rng: &mut Rng) -> Mat {
    loop {
        let q = orthonormal_columns(&Mat::from_fn(n, n, |_, _| rng.normal()));
        if q.cols == n {
            return q;
        }
    }
}

impl Problem {
    /// The instance for `seed` at condition number `kappa` (≥ 1). The same seed gives the same
    /// G*, F* and basis V at every κ: only Σ's spectrum changes.
    pub fn new(dims: Dims, kappa: f64, seed: u64) -> Problem {
        let mut rng = Rng::new(seed.wrapping_mul(0x1000_0001).wrapping_add(17));
        let Dims { dx, k, dy, .. } = dims;
        let v = random_orthogonal(dx, &mut rng);
        let lambda: Vec<f64> =
            (0..dx).map(|i| if dx == 1 { 1.0 } else { kappa.powf(-(i as f64) / (dx - 1) as f64) }).collect();
        let scaled = |p: f64| {
            let vd = Mat::from_fn(dx, dx, |i, j| v.at(i, j) * lambda[j].powf(p));
            vd.matmul(&v.t())
        };
        let sigma = scaled(1.0);
        let sigma_half = scaled(0.5);
        let g_star = random_orthogonal(dx, &mut rng);
        let g_star = Mat::from_fn(k, dx, |i, j| g_star.at(j, i));
        let f_star = Mat::from_fn(dy, k, |_, _| rng.normal() / (k as f64).sqrt());
        let m_star = f_star.matmul(&g_star);
        let complement = Mat::eye(dx).sub(&g_star.t().matmul(&g_star));
        Problem { dims, kappa, sigma, sigma_half, g_star, f_star, m_star, complement }
    }

    /// A minibatch of `batch` samples: inputs [batch, dx] and targets [batch, dy], row-major
    /// float32.
    pub fn sample(&self, batch: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
        let Dims { dx, dy, noise, .. } = self.dims;
        let u = Mat::from_fn(batch, dx, |_, _| rng.sign());
        let x = u.matmul(&self.sigma_half); // Σ^{1/2} is symmetric: rows are (Σ^{1/2} u)ᵀ
        let mut y = x.matmul(&self.m_star.t());
        for v in y.data.iter_mut() {
            *v += noise * rng.normal();
        }
        debug_assert_eq!(y.cols, dy);
        (x.to_f32(), y.to_f32())
    }

    /// The population excess risk of the model F·G: tr((FG − F*G*) Σ (FG − F*G*)ᵀ), which is
    /// E‖FGx − y‖² minus the noise's dy·σ².
    pub fn excess_risk(&self, f: &Mat, g: &Mat) -> f64 {
        let delta = f.matmul(g).sub(&self.m_star);
        delta.matmul(&self.sigma).matmul(&delta.t()).trace()
    }

    /// The distance between the row spaces of G and G*: ‖(I − G*ᵀG*)·Q‖₂ with Q an orthonormal
    /// basis of G's row space, in [0, 1] (1 when G has lost rank, so a direction is missing).
    pub fn subspace_distance(&self, g: &Mat) -> f64 {
        let q = orthonormal_columns(&g.t());
        if q.cols < self.dims.k {
            return 1.0;
        }
        spectral_norm(&self.complement.matmul(&q)).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::sym_eigvals;

    #[test]
    fn sigma_has_the_asked_condition_number_and_the_truth_has_zero_risk() {
        let p = Problem::new(Dims::default(), 100.0, 3);
        let ev = sym_eigvals(&p.sigma);
        assert!((ev[0] - 1.0).abs() < 1e-9 && (ev[ev.len() - 1] - 0.01).abs() < 1e-9, "{ev:?}");
        assert!(p.excess_risk(&p.f_star, &p.g_star).abs() < 1e-20);
        assert!(p.subspace_distance(&p.g_star) < 1e-7);
        let other = Mat::from_fn(4, 32, |i, j| if j == 4 * i + 1 { 1.0 } else { 0.0 });
        let d = p.subspace_distance(&other);
        assert!(d > 0.5 && d <= 1.0, "{d}");
    }

    #[test]
    fn the_sample_covariance_approaches_sigma() {
        let p = Problem::new(Dims::default(), 10.0, 1);
        let mut rng = Rng::new(5);
        let n = 20000;
        let (x, _) = p.sample(n, &mut rng);
        let x = Mat::from_f32(n, 32, &x);
        let cov = x.t().matmul(&x);
        let err = (0..32 * 32).map(|i| (cov.data[i] / n as f64 - p.sigma.data[i]).abs()).fold(0.0, f64::max);
        assert!(err < 0.03, "{err}");
    }
}
