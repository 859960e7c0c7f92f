// Lion: the sign of an interpolation between momentum and gradient, so every element moves
// by exactly lr (plus decoupled weight decay); the momentum uses a second, slower rate.
// Paper: Chen et al., "Symbolic Discovery of Optimization Algorithms" (NeurIPS 2023).
// Matches: optax.lion (golden case lion-default): update = sign(beta1 * m + (1 - beta1) * g),
// then m = beta2 * m + (1 - beta2) * g, and the decayed weights are added to the update
// before scaling by lr.
optimizer lion {
  hyper lr = 1e-4
  hyper beta1 = 0.9
  hyper beta2 = 0.99
  hyper weight_decay = 1e-3

  state m = zeros   // momentum

  update(p, g) {
    let u = sign(lerp(m, g, 1 - beta1))
    m = lerp(m, g, 1 - beta2)
    p = p - lr * (u + weight_decay * p)
  }
}
