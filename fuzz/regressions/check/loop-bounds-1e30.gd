optimizer o {
  hyper lr = 0.01
  hyper n: int = 3 in 0..=10000
  state m = zeros
  update(p, g) {
    for i in 1e30..1e30 { m = m + g * i }
    p = p - m
  }
}
