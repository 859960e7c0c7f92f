// expect: E0010
optimizer lazy {
  hyper lr = 0.01
  state m = zeros
  update(p, g) {
    every 0 {
      m = g
    }
    p = p - lr * m
  }
}
