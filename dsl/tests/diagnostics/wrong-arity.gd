// expect: E0003
optimizer adam_like {
  hyper lr = 0.01
  state m = zeros
  update(p, g) {
    m = lerp(m, g)
    p = p - lr * m
  }
}
