// expect: E0022
optimizer ns {
  hyper lr = 0.01
  update(p, g) {
    let (a, b) = lr
    let t = (1, 2)
    p = p - lr * g
  }
}
