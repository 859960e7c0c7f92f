// expect: E0007
optimizer accum {
  hyper lr = 0.01
  state total
  update(p, g) {
    total += g
    p = p - lr * total
  }
}
