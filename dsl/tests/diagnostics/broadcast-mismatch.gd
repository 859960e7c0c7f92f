// expect: E0005
optimizer sgd {
  hyper lr = 0.01
  update(p: [rows, cols], g) {
    p = p - lr * (g + g.T)
  }
}
