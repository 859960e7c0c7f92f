// expect: E0023
// Initialisers see hyperparameters, `p`, `zeros` and `eye`, but no other state and no gradient.
optimizer twin {
  hyper lr = 0.01
  state m = zeros
  state v = m
  state w = g
  update(p, g) {
    m = 0.9 * m + g
    v = 0.99 * v + g * g
    w = g
    p = p - lr * m / (sqrt(v) + 1e-8) + 0 * w
  }
}
