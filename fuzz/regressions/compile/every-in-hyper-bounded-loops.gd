optimizer o {
  hyper lr = 0.01
  hyper n: int = 3 in 0..=10000
  state m = zeros
  update(p, g) {
    for i in 0..n { for j in 0..n { every 2 { m = m + g } } }
    p = p - m
  }
}
