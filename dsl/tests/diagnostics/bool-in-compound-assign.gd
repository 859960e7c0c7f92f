// expect: E0014
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    var on = true
    on += false
    var n = 1
    n = step > 10
    p = p - lr * g
  }
}
