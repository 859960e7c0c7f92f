// expect: E0024
fn scale(x: [..., r, c]) -> [r, c] {
  return 2 * x
}

optimizer batched {
  hyper lr = 0.01
  state m: [..., rows, cols] = zeros
  update(p: [rows, ..., cols], g) {
    m = 0.9 * m + g
    p = p - lr * scale(m)
  }
  update(p: [..., rows], g) {
    p = p - lr * g
  }
}
