// Schedule-free AdamW: no learning-rate schedule to tune; the parameter is an interpolation
// between a fast iterate z and a running average, weighted by how large the learning rate
// has been so far.
// Paper: Defazio et al., "The Road Less Scheduled" (NeurIPS 2024).
// Matches: schedulefree.AdamWScheduleFree in train mode, where the parameter holds y, the
// point gradients are taken at (golden case schedule_free_adamw-default).
optimizer schedule_free_adamw {
  hyper lr = 0.0025
  hyper warmup_steps: int = 0
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.0
  hyper weight_lr_power = 2.0
  hyper r = 0.0

  // Shared by all parameters and carried across steps.
  global lr_max = -1
  global weight_sum = 0

  state z = p          // the fast iterate
  state v = zeros      // second moment

  prepare {
    let lr_t = lr * where(step <= warmup_steps, step / warmup_steps, 1)
    lr_max = max(lr_max, lr_t)
    let weight = step ^ r * lr_max ^ weight_lr_power
    weight_sum = weight_sum + weight
    let ckp1 = where(weight_sum != 0, weight / weight_sum, 0)
    let y_lr = lr_t * (beta1 * (1 - ckp1) - 1)
  }

  update(p, g) {
    v = lerp(v, g * g, 1 - beta2)
    let g_n = g / (sqrt(v / (1 - beta2 ^ step)) + eps) + weight_decay * p
    p = lerp(p, z, ckp1) + y_lr * g_n
    z = z - lr_t * g_n
  }
}
