// expect: E0029
// A wrapper wraps an optimizer: a transformation has no parameter of its own to step.
optimizer scale_by_sign {
  update(p, u) {
    return sign(u)
  }
}

optimizer ema(base) {
  hyper decay = 0.999
  state avg = p
  update(p, g) {
    p = base(p, g)
    avg = lerp(avg, p, 1 - decay)
  }
}

optimizer ema_sign = ema(scale_by_sign)
