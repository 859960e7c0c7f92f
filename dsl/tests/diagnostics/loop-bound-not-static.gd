// expect: E0015
optimizer sgd {
  hyper lr = 0.01
  hyper n: int = 5
  update(p, g) {
    var x = g
    for i in 0..numel {
      x = 0.5 * x
    }
    for i in 0..n {
      x = 0.5 * x
    }
    for i in 0..2.5 {
      x = 0.5 * x
    }
    p = p - lr * x
  }
}
