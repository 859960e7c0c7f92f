// expect: E0001
optimizer sgd {
  hyper lr = 0.01
  let beta = 0.9
  update(p, g) {
    p = p - lr * g
  }
}
