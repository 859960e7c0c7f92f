// expect: E0018
optimizer sgd {
  hyper lr = 0.01
  update(p: [rows, cols], g) {
    let a = sqrt(g, axis = 0)
    let b = sum(g, dim = 1)
    let c = mean(g, axis = 2)
    let d = norm(g, axis = 0, axis = 1)
    p = p - lr * a * b * c * d
  }
}
