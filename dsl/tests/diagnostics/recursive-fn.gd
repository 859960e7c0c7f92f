// expect: E0011
fn power(x: tensor, n: int) -> tensor {
  return x * power(x, n - 1)
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * power(g, 3)
  }
}
