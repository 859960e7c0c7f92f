// expect: E0020
optimizer precond {
  hyper lr = 0.01
  state l: [rows, cols] = eye
  update(p: [rows, cols], g) {
    l = l + eye(g)
    p = p - lr * l
  }
}
