// expect: E0003
fn scale(x: tensor, s: f32) -> tensor {
  return x * s
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - scale(g, lr, 2)
  }
}
