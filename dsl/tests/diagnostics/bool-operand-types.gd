// expect: E0014
fn pick(c: bool, x: f32) -> f32 {
  return where(c, x, 0)
}

optimizer sgd {
  hyper lr = 0.01
  hyper flip = false
  update(p, g) {
    let a = -flip
    let b = !lr
    let c = where(lr, g, p)
    let d = pick(lr, lr)
    let e = (step > 1) && lr
    p = p - lr * g
  }
}
