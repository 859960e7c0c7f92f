// Shampoo: a Kronecker-factored preconditioner. A matrix gradient G is preconditioned from
// both sides, by the inverse fourth roots of the running sums of G G^T (rows) and G^T G
// (columns); a vector by the inverse square root of the running sum of g g^T.
// Paper: Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization"
// (ICML 2018), Algorithm 1 (golden case shampoo-default): L and R start at eps * I, and
// W <- W - lr * L^(-1/4) G R^(-1/4). The roots are the expensive part (an
// eigendecomposition each): precondition_frequency = K recomputes them on steps 1, K+1,
// 2K+1, ... and reuses them in between, as practical Shampoo does; 1 is Algorithm 1.
// The statistics accumulate every step; the roots run in float64 (`precision = f32`
// halves their cost on the CPU).
optimizer shampoo {
  hyper lr = 0.05
  hyper eps = 1e-2
  hyper precondition_frequency: int = 1 in 1..=1000000

  state L: [rows, rows] = eps * eye    // row statistics
  state R: [cols, cols] = eps * eye    // column statistics (matrices)
  state PL: [rows, rows] = eye         // their inverse roots, as last computed
  state PR: [cols, cols] = eye

  update(p: [rows, cols], g) {
    L = L + g @ g.T
    R = R + g.T @ g
    every precondition_frequency {
      PL = inv_root(L, 4)
      PR = inv_root(R, 4)
    }
    p = p - lr * PL @ g @ PR
  }

  update(p: [rows], g) {
    L = L + outer(g, g)
    every precondition_frequency {
      PL = inv_root(L, 2)
    }
    p = p - lr * PL @ g
  }
}
