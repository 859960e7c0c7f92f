// expect: E0013
fn halve(x: f32) -> f32 {
  x = x / 2
  return x
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - halve(lr) * g
  }
}
