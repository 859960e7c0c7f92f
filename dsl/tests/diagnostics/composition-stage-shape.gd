// expect: E0005
// A chain stage whose shapes do not fit: the preconditioner multiplies a matrix direction
// by a statistic that has the wrong shape for it.
optimizer precondition_rows {
  hyper eps = 1e-6
  state l: [rows, rows] = zeros
  update(p: [rows, cols], u) {
    l = l + u @ u.T
    return u @ (l + eps)
  }
}

optimizer rows_sgd {
  hyper lr = 0.01
  part precondition_rows
  update(p, g) {
    p = p - lr * precondition_rows(p, g)
  }
}
