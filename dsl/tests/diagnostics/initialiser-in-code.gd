// expect: E0002
// `zeros` and `eye` only mean something as state initialisers; a function needs a call.
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    let z = zeros
    let r = sqrt
    p = p - lr * g
  }
}
