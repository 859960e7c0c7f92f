// expect: E0013 E0030
optimizer clipped {
  hyper lr = 0.01
  global scale = 1
  prepare {
    let s = 2 * lr
  }
  update(p, g) {
    scale = 2 * numel
    s = 3
    step = 1
    p = p - lr * scale * s * g
  }
}
