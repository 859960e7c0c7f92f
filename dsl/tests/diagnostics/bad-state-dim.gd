// expect: E0020
optimizer factored {
  hyper lr = 0.01
  state r: [rows, depth] = zeros
  state c: [cols, cols, cols] = zeros
  update(p: [rows, cols], g) {
    r = r + 1
    c = c + 1
    p = p - lr * g
  }
}
