// expect: E0017
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g
  }
  update(p: tensor, g) {
    p = p - 2 * lr * g
  }
}
