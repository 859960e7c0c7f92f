// expect: E0017
optimizer sgd {
  hyper lr = 0.01
  update(p: [cols, rows], g) {
    p = p - lr * g
  }
}
