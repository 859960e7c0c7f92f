// expect: E0009
optimizer scaled {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr / fan_in * g
  }
}
