// expect: E0009
optimizer factored {
  hyper lr = 0.01
  state r: [rows] = zeros
  update(p, g) {
    r = 1
    p = p - lr * g
  }
}
