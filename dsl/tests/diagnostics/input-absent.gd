// expect: E0027 E0027 E0023 E0027
// An optional input read outside `if present(h)`, `present` of a required input, an input
// read in `prepare`, and one read in the else branch of its own presence test.
optimizer sophia_like {
  hyper lr = 0.01
  optional input h
  input a: [batch, cols]
  state hess = zeros
  prepare {
    let x = h
  }
  update(p: [rows, cols], g) {
    hess = hess + h * h
    if present(a) {
      hess = hess + 1
    }
    if present(h) {
      hess = hess * 0.5
    } else {
      hess = hess + h
    }
    let c = a.T @ a
    p = p - lr * g * sum(hess) * sum(c)
  }
}
