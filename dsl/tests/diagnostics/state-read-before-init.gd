// expect: E0007
// State without an initialiser must be assigned on every path before it is read.
optimizer lookahead {
  hyper lr = 0.01
  state slow
  update(p, g) {
    if step > 1 {
      slow = p
    }
    p = p - lr * g + 0.5 * (slow - p)
  }
}
