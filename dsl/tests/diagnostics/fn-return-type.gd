// expect: E0016
fn total(x: tensor) -> tensor {
  return sum(x)
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * total(g)
  }
}
