// expect: E0029
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g
    return p
  }
}
