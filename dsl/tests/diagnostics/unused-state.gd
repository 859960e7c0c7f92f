// expect: W0008
optimizer sgd {
  hyper lr = 0.01
  state m = zeros
  update(p, g) {
    p = p - lr * g
  }
}
