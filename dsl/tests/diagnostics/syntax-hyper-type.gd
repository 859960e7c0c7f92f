// expect: E0001
optimizer sgd {
  hyper lr: tensor = 0.01
  update(p, g) {
    p = p - lr * g
  }
}
