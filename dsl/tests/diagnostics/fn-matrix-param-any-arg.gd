// expect: E0009
fn orth(x: [r, c]) -> [r, c] {
  return x @ x.T @ x
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * orth(g)
  }
}
