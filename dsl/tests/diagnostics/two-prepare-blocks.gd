// expect: E0012
optimizer clipped {
  hyper lr = 0.01
  global scale = 1
  prepare {
    scale = 1
  }
  prepare {
    scale = 2
  }
  update(p, g) {
    p = p - lr * scale * g
  }
}
