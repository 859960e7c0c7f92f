// expect: E0021
fn scale(x, s: f32) -> tensor {
  return x * s
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - scale(g, lr)
  }
}
