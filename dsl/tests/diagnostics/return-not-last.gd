// expect: E0016
fn safe(x: f32) -> f32 {
  if x > 0 {
    return x
  }
  return 1
}

optimizer sgd {
  hyper lr = 0.01
  global s = 1
  prepare {
    return 2
  }
  update(p, g) {
    p = p - safe(lr) * s * g
  }
}
