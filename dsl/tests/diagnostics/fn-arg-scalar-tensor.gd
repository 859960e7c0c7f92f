// expect: E0004
fn scaled(s: f32) -> f32 {
  return 2 * s
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - scaled(g)
  }
}
