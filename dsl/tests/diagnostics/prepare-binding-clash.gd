// expect: E0012
// `prepare`'s bindings are visible in `update`, so they share its names.
optimizer clipped {
  hyper lr = 0.01
  prepare {
    let g = 2 * lr
  }
  update(p, g) {
    p = p - lr * g
  }
}
