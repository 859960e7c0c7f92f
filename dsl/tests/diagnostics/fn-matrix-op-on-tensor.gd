// expect: E0009
// A `tensor` parameter has no named dimensions inside the function.
fn gram(x: tensor) -> tensor {
  return x @ x.T
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g
  }
}
