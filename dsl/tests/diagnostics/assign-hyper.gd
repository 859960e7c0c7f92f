// expect: E0006
optimizer decaying {
  hyper lr = 0.01
  update(p, g) {
    lr = lr * 0.99
    p = p - lr * g
  }
}
