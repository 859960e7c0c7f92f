// expect: E0002 E0003 E0018
// A call that is wrong itself still has its arguments checked.
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    let a = sqrt(g, bogus)
    let b = sqr(gg)
    let c = max(g, 1, axis = 0) + nope
    p = p - lr * a * b * c
  }
}
