// expect: E0014
optimizer sgd {
  hyper lr = 0.01
  hyper warmup = 100
  update(p, g) {
    if warmup {
      p = p - lr * g
    }
  }
}
