// expect: E0005
// A `[rows]` vector against a `[rows, rows]` matrix could go along either dimension.
optimizer kron {
  hyper lr = 0.01
  state l: [rows, rows] = eye
  state r: [rows] = zeros
  update(p: [rows, cols], g) {
    r = sum(g * g, axis = 1)
    l = l * r
    p = p - lr * l @ g
  }
}
