// expect: E0029
// A wrapper is not a program until it is given the optimizer it wraps.
optimizer ema(base) {
  hyper decay = 0.999
  state avg = p
  update(p, g) {
    p = base(p, g)
    avg = lerp(avg, p, 1 - decay)
  }
}
