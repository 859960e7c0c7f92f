// expect: E0005
optimizer shampoo_like {
  hyper lr = 0.01
  update(p: [rows, cols], g) {
    let gg = g @ g
    p = p - lr * gg
  }
}
