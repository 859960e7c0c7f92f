// Signum (Bernstein et al. 2018; optax's `signum`'s rule): the sign of a momentum. Its
// momentum is exactly zero in float32 on some elements where the float64 reference keeps a
// rounding residue, so `sign` jumps: `gdc verify` must count those, not fail them.
optimizer signum {
  hyper lr = 0.01
  hyper beta = 0.9

  state m = zeros

  update(p, g) {
    m = beta * m + (1 - beta) * g
    p = p - lr * sign(m)
  }
}
