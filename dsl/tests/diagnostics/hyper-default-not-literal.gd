// expect: E0019
optimizer sgd {
  hyper lr = 0.01
  hyper wd = lr / 10
  update(p, g) {
    p = p - lr * (g + wd * p)
  }
}
