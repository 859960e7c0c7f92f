// expect: E0011
fn ping(x: f32) -> f32 {
  return pong(x) + 1
}

fn pong(x: f32) -> f32 {
  return ping(x) * 2
}

optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - ping(lr) * g
  }
}
