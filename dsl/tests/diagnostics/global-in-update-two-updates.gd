// expect: E0025
optimizer counted {
  hyper lr = 0.01
  global seen = 0

  update(p: [rows, cols], g) {
    seen = seen + global_sum(g * g)
    p = p - lr * g
  }

  update(p, g) {
    p = p - lr * g
  }
}
