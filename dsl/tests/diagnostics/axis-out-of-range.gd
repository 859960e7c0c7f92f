// expect: E0005
optimizer adafactor_like {
  hyper lr = 0.01
  state r: [rows] = zeros
  update(p: [rows, cols], g) {
    r = sum(g * g, axis = 1)
    let s = sum(r, axis = 1)
    p = p - lr * s * g
  }
}
