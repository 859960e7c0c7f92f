// expect: E0010
// The period is an integer known before the step: a literal or an `int` hyperparameter.
optimizer lazy {
  hyper lr = 0.01
  hyper period = 10
  hyper k: int = 0 in 0..=100
  state m = zeros
  update(p, g) {
    every period {
      m = g
    }
    every k {
      m = 2 * m
    }
    every 2 * 5 {
      m = m + g
    }
    let n = 3
    every n {
      m = m - g
    }
    p = p - lr * m
  }
}
