// expect: E0012
optimizer sgd {
  hyper lr = 0.01
  hyper lr = 0.02
  state m = zeros
  update(p, g) {
    let m = g
    m = 0.9 * m + g
    let d = lr * g
    let d = 2 * d
    p = p - d
  }
}
