// expect: E0004
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    if g > 0 {
      p = p - lr * g
    }
  }
}
