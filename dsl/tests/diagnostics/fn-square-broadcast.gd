// expect: E0005
// A function checked with two dimensions `r` and `c` broadcasts a `[c]` vector against an
// `[r, c]` matrix; called with a square matrix, `r` and `c` are one dimension and the
// broadcast is ambiguous (found by random-program differential testing, where it was an
// internal compiler error after lowering).
fn centre(x: [r, c]) -> [r, c] {
  return mean(x, axis = 0) - x
}

fn twice(y: [a, b]) -> [a, b] {
  return centre(y) + centre(y)
}

optimizer square_calls {
  hyper lr = 0.1
  state s: [cols, cols] = eye

  update(p: [rows, cols], g) {
    s = centre(s)
    let ok = centre(g)
    let u = twice(g @ g.T)
    p = p - lr * ok * sum(u)
  }
}
