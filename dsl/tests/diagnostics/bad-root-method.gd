// expect: E0018
optimizer shampoo_like {
  hyper lr = 0.01
  state L: [rows, rows] = eye
  update(p: [rows, cols], g) {
    L = L + g @ g.T
    let a = inv_root(L, 4, method = cholesky)
    let b = inv_root(L, 4, method = newton, method = eigh)
    let c = eigvecs(L, method = newton)
    let d = inv_root(L, 4, precision = f32, method = newton)
    p = p - lr * (a + b + c + d) @ g
  }
}
