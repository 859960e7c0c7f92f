// expect: E0001
optimizer sgd {
  hyper lr = 0.01
  hyper eps = 1e-8
  state v = zeros
  update(p, g) {
    v = lerp(v, g * g, 0.01
    p = p - lr * g / (sqrt(v) + eps)
  }
}
