// expect: E0005
optimizer sgd {
  hyper lr = 0.01
  update(p: [rows, cols], g) {
    let d = dot(g, g.T)
    p = p - lr * d * g
  }
}
