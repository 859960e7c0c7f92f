// expect: E0002
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    delta = lr * g
    p = p - lr * g
  }
}
