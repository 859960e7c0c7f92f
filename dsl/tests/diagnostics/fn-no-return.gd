// expect: E0016
fn half(x: f32) -> f32 {
  let y = x / 2
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - half(lr) * g
  }
}
