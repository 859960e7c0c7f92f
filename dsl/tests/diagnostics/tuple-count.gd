// expect: E0022
optimizer ns {
  hyper lr = 0.01
  update(p, g) {
    let (a, b, c) = (3.4445, -4.7750)
    p = p - lr * g
  }
}
