// expect: E0004
// A scalar variable cannot hold a tensor.
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    var size = 0
    size = g * g
    p = p - lr * g / (sqrt(size) + 1)
  }
}
