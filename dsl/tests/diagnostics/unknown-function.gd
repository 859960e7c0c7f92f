// expect: E0002
optimizer rms {
  hyper lr = 0.01
  state v = zeros
  update(p, g) {
    v = lerp(v, g * g, 0.01)
    p = p - lr * g / (sqr(v) + 1e-8)
  }
}
