// expect: E0012
fn twice(x: f32) -> f32 {
  return 2 * x
}

fn twice(x: f32) -> f32 {
  return x + x
}

fn sqrt(x: f32) -> f32 {
  return x
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - twice(lr) * g
  }
}
