// expect: E0009
optimizer factored {
  hyper lr = 0.01
  state r: [rows] = zeros
  update(p, g) {
    p = p - lr * g / (sqrt(r) + 1e-8)
  }
}
