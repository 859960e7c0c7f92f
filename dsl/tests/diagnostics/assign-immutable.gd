// expect: E0013
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    let d = lr * g
    d = 2 * d
    g = g * 0.5
    for i in 0..3 {
      i = 2
    }
    p = p - d
  }
}
