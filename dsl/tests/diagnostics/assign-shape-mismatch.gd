// expect: E0005
// Summing over axis 0 leaves `[cols]`, which does not fit a `[rows]` state.
optimizer adafactor_like {
  hyper lr = 0.01
  state r: [rows] = zeros
  update(p: [rows, cols], g) {
    r = sum(g * g, axis = 0)
    p = p - lr * g / (sqrt(r) + 1e-8)
  }
}
