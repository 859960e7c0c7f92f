// expect: E0009
// `update(p, g)` takes parameters of any rank, so `p` has no rows and columns to multiply.
optimizer muon_like {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g @ g.T
  }
}
