// SGD with momentum under a warmup-stable-decay learning rate: linear from 0 to `lr` over
// `warmup_steps`, `lr` for `stable_steps`, linear to 0 over `decay_steps`.
// Matches: optax.sgd(wsd, momentum) with optax.join_schedules (golden case sgd_wsd-default);
// optax reads a schedule at count = step - 1, hence `step - 1` below.
optimizer sgd_wsd {
  hyper lr = 0.05
  hyper warmup_steps: int = 100
  hyper stable_steps: int = 1000
  hyper decay_steps: int = 200
  hyper momentum = 0.9

  state buf = zeros   // momentum buffer

  prepare {
    // Once per step, on the host: the kernels receive lr_t as a scalar.
    let lr_t = wsd(step - 1, lr, warmup_steps, stable_steps, decay_steps)
  }

  update(p, g) {
    buf = g + momentum * buf
    p = p - lr_t * buf
  }
}
