// expect: E0004
optimizer muon_like {
  hyper lr = 0.01
  update(p: [rows, cols], g) {
    p = p - lr @ g
  }
}
