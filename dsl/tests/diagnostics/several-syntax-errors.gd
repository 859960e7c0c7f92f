// expect: E0001
// Three independent syntax errors, all reported in one run.
optimizer sgd {
  hyper lr = = 0.01
  state m = zeros
  update(p, g) {
    m = 0.9 * m + + g
    let = 3
    p = p - lr * m
  }
}
