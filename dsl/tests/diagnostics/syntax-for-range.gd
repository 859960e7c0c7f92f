// expect: E0001
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    var x = g
    for i in 0..=3 {
      x = 0.5 * x
    }
    for i in 3 {
      x = 0.5 * x
    }
    p = p - lr * x
  }
}
