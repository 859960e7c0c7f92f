// expect: E0009
optimizer vec {
  hyper lr = 0.1
  state c: [cols] = zeros
  update(p: [rows], g) {
    c = c + 1
    p = p - lr * g * rows / cols
  }
}
