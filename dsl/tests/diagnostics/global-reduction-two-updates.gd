// expect: E0025
optimizer clipped {
  hyper lr = 0.01

  update(p: [rows, cols], g) {
    p = p - lr * g / global_norm(g)
  }

  update(p, g) {
    p = p - lr * g
  }
}
