// expect: E0017
optimizer first {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g
  }
}

optimizer second {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g
  }
}
