// Shampoo: a Kronecker-factored preconditioner. A matrix gradient G is preconditioned from
// both sides, by the inverse fourth roots of the running sums of G G^T (rows) and G^T G
// (columns); a vector by the inverse square root of the running sum of g g^T.
// Paper: Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization"
// (ICML 2018), Algorithm 1 (golden case shampoo-default): L and R start at eps * I, and
// W <- W - lr * L^(-1/4) G R^(-1/4).
optimizer shampoo {
  hyper lr = 0.05
  hyper eps = 1e-2

  state L: [rows, rows] = eps * eye   // row statistics
  state R: [cols, cols] = eps * eye   // column statistics (matrices)

  update(p: [rows, cols], g) {
    L = L + g @ g.T
    R = R + g.T @ g
    p = p - lr * inv_root(L, 4) @ g @ inv_root(R, 4)
  }

  update(p: [rows], g) {
    L = L + outer(g, g)
    p = p - lr * inv_root(L, 2) @ g
  }
}
