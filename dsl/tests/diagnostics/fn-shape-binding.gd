// expect: E0005
// A function's dimension names are bound by its first argument; the second disagrees.
fn mix(a: [r, c], b: [r, c]) -> [r, c] {
  return a + b
}

fn blend(a: tensor, b: tensor) -> tensor {
  return a + b
}

optimizer sgd {
  hyper lr = 0.01
  state row: [rows] = zeros
  update(p: [rows, cols], g) {
    row = sum(g, axis = 1)
    p = p - lr * mix(g, g.T)
    p = p - lr * blend(g, row)
  }
}
