// expect: E0019
optimizer sgd {
  hyper lr = 0.01
  hyper steps: int = 2.5
  hyper nesterov: bool = 1
  hyper beta: f32 = true
  update(p, g) {
    p = p - lr * g
  }
}
