// expect: E0005
optimizer factored {
  hyper lr = 0.01
  state r: [rows] = p
  update(p: [rows, cols], g) {
    r = sum(g * g, axis = 1)
    p = p - lr * g / (sqrt(r) + 1e-8)
  }
}
