// expect: E0004 E0005 E0009 E0020
optimizer shampoo_like {
  hyper lr = 0.1
  state L: [rows, rows] = eye
  state R: [cols, cols] = eye

  update(p: [rows, cols], g) {
    let a = outer(g, g)
    let b = inv_root(g, 4)
    let c = inv_root(L, g)
    p = p - lr * inv_root(L, 4) @ g @ inv_root(R, 4)
  }

  update(p, g) {
    p = p - lr * outer(g, g)
  }
}
