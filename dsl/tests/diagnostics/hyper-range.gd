// expect: E0019
optimizer sgd {
  hyper lr = 0.01 in 0.1..=1
  hyper beta = 0.9 in 0..=lr
  hyper nesterov = true in 0..=1
  hyper steps: int = 5 in 0..=7.5
  hyper decay = 0.5 in 1..=0
  update(p, g) {
    p = p - lr * beta * g
  }
}
