// expect: E0015
// Loops are unrolled when compiling, so their length is limited.
optimizer sgd {
  hyper lr = 0.01
  hyper n: int = 5 in 0..=1000000
  update(p, g) {
    var x = g
    for i in 0..20000 {
      x = 0.5 * x
    }
    for i in 0..n {
      x = 0.5 * x
    }
    p = p - lr * x
  }
}
