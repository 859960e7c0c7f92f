// expect: E0001
// Schätzung der Momente — non-ASCII text before the errors must not shift their carets.
optimizer sgd {
  hyper lr = 0.01 ±
  update(p, g) {
    p = p − lr * g
    p = p - lr ** g
  }
}
