// Wrappers: optimizers around another optimizer, named by a parameter (`base`) and given where
// they are instantiated, `optimizer adamw_ema = weight_ema(adamw)`. The wrapped optimizer keeps
// its hyperparameter and state names; the wrapper adds its own.

// An exponential moving average of the weights, for evaluation (timm's ModelEmaV2 rule):
// after each step of `base`, ema = ema_decay * ema + (1 - ema_decay) * p, starting at the
// parameters the first step receives.
optimizer weight_ema(base) {
  hyper ema_decay = 0.999

  state ema = p   // the average

  update(p, g) {
    p = base(p, g)
    ema = lerp(ema, p, 1 - ema_decay)
  }
}

// Lookahead (Zhang, Lucas, Hinton, Ba, NeurIPS 2019; optax.lookahead with reset_state False):
// `base` moves the fast weights (the parameter); on steps sync_period, 2 sync_period, ... the
// slow weights move slow_step_size of the way towards them and the fast weights restart there.
optimizer lookahead(base) {
  hyper sync_period: int = 6 in 1..=1000000
  hyper slow_step_size = 0.5

  state slow = p   // the slow weights, starting synced

  update(p, g) {
    p = base(p, g)
    every sync_period at sync_period {
      slow = lerp(slow, p, slow_step_size)
      p = slow
    }
  }
}
