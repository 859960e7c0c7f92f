// expect: E0010
optimizer forever {
  hyper lr = 0.01
  state m = zeros
  update(p, g) {
    every 5000000000 {
      m = g
    }
    p = p - lr * m
  }
}
