// expect: E0019
// A global starts at a number literal; `prepare` computes its value each step.
optimizer clipped {
  hyper lr = 0.01
  global scale = lr
  global twice = 2 * 3
  global on = true
  prepare {
    scale = 2 * lr
  }
  update(p, g) {
    p = p - lr * scale * twice * on * g
  }
}
