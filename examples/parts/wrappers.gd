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

// Schedule-free (Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less
// Scheduled", NeurIPS 2024), as schedulefree's ScheduleFreeWrapper in train mode: the
// parameter is the point y where gradients are taken; `base` steps the iterate z (state)
// with that gradient, the average x is recovered from y and z, moved towards z by the
// step's weight, and y interpolates between them again. The weight of step t is
// t^r * lr_max^weight_lr_power with lr_max the largest learning rate so far: it reads `lr`,
// the wrapped optimizer's learning rate.
optimizer schedule_free(base) {
  hyper beta = 0.9               // the wrapper's momentum (schedulefree's `momentum`)
  hyper weight_decay_at_y = 0.0
  hyper r = 0.0
  hyper weight_lr_power = 2.0

  // Shared by all parameters and carried across steps.
  global lr_max = 0
  global weight_sum = 0

  state z = p   // the base optimizer's iterate

  prepare {
    lr_max = max(lr, lr_max)
    let weight = step ^ r * lr_max ^ weight_lr_power
    weight_sum = weight_sum + weight
    // While every learning rate so far was 0 the average has no weight (schedulefree would
    // divide by zero): nothing moves.
    let ckp1 = where(weight_sum != 0, weight / weight_sum, 0)
  }

  update(p, g) {
    z = z - lr * weight_decay_at_y * p
    p = p - lr * weight_decay_at_y * (1 - beta) * p
    let x = lerp(p, z, 1 - 1 / beta)
    z = base(z, g)
    p = lerp(lerp(x, z, ckp1), z, 1 - beta)
  }
}
