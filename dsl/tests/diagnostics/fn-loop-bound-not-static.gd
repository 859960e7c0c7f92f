// expect: E0015
fn halve(x: tensor, n: int) -> tensor {
  var y = x
  for i in 0..n {
    y = 0.5 * y
  }
  return y
}

fn twice(x: tensor, k: int) -> tensor {
  return halve(halve(x, k), k)
}

optimizer sgd {
  hyper lr = 0.01
  hyper n: int = 3
  update(p, g) {
    p = p - lr * halve(g, 2) - lr * twice(g, 1) - lr * halve(g, n) - lr * twice(g, step)
  }
}
