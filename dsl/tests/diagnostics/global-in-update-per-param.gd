// expect: E0030
optimizer estimate {
  hyper lr = 0.01
  global d = 1
  global peak = 0
  global hits = 0
  state m = zeros

  update(p, g) {
    m = 0.9 * m + 0.1 * g
    let local = sum(g * g)
    var scale = 1
    scale = local + 1
    d = max(d, global_sum(abs(m)))
    peak = max(peak, scale)
    if norm(g) > 1 {
      hits = hits + 1
    }
    d = where(has_role(bias), d, 2 * d)
    d = global_scale(norm(g))
    p = p - lr * d * m
  }
}

// Named like a global reduction, but a user function: its value follows its argument.
fn global_scale(x: f32) -> f32 {
  return 2 * x
}
