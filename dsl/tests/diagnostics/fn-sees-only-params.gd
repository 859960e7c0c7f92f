// expect: E0002
// A function sees only its parameters, not the optimizer's names.
fn scaled(x: tensor) -> tensor {
  return lr * x / step
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - scaled(g)
  }
}
