// Lookahead around Adam: Adam moves the fast weights (the parameter); every sync_period
// steps the slow weights move slow_step_size of the way towards them and the fast weights
// restart from there ("k steps forward, 1 step back").
// Paper: Zhang, Lucas, Hinton, Ba, "Lookahead Optimizer: k steps forward, 1 step back"
// (NeurIPS 2019).
// Matches: optax 0.2.8's lookahead(adam, sync_period, slow_step_size) with reset_state
// False (golden case lookahead_adam-optax): the parameter is optax's `params.fast`, the
// state `slow` its `params.slow` (starting synced), the sync on steps sync_period,
// 2 sync_period, ... (`every K at K`). Adam's body is written out: wrapping adam.gd itself
// needs composition in the language, which is not built yet.
optimizer lookahead_adam {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper sync_period: int = 6 in 1..=1000000
  hyper slow_step_size = 0.5

  state m = zeros   // Adam's moments, of the fast weights
  state v = zeros
  state slow = p    // the slow weights

  update(p, g) {
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
    every sync_period at sync_period {
      slow = lerp(slow, p, slow_step_size)
      p = slow
    }
  }
}
