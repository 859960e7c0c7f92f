// expect: E0004
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    let n = norm(lr)
    p = p - n * g
  }
}
