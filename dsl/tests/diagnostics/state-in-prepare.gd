// expect: E0023
// `prepare` runs once per step for all parameters: no state, no `p`, no `g`, no `rows`.
optimizer clipped {
  hyper lr = 0.01
  global scale = 1
  state m = zeros
  prepare {
    scale = 1 / (1 + norm(m))
    m = 0
    let n = rows * norm(g)
    p = 0
  }
  update(p, g) {
    m = 0.9 * m + g
    p = p - lr * scale * m
  }
}
