// expect: E0002
// A misspelt state name: the hint suggests the closest name in scope.
optimizer momentum {
  hyper lr = 0.01
  state buf = zeros
  update(p, g) {
    buf = 0.9 * buf + g
    p = p - lr * bff
  }
}
