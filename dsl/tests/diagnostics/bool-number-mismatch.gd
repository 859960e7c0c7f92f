// expect: E0014
optimizer sgd {
  hyper lr = 0.01
  hyper nesterov = true
  update(p, g) {
    p = p - lr * nesterov * g
  }
}
