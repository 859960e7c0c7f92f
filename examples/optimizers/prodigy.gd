// Prodigy: Adam whose step size d is learnt while training. d starts tiny and grows to
// `estim_lr_coef * numerator / denominator`: the numerator a decaying sum, over every
// parameter and step, of <g, p0 - p> (how far the gradients point back towards where training
// started), the denominator the l1 norm of a decaying sum of the d-scaled gradients. d never
// shrinks. d and the numerator are one scalar for the whole optimizer: globals the update
// assigns from reductions over every parameter, stored once per step.
// Paper: Mishchenko, Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"
// (ICML 2024).
// Matches: optax 0.2.8's contrib.prodigy (golden case prodigy-optax), beta3 defaulting to
// sqrt(beta2) as there, weight decay decoupled and scaled by d * lr. Where the denominator is
// 0 (a zero learning rate, zero gradients) d stays as it was; optax divides by it and d
// becomes NaN, the authors' PyTorch code (prodigyopt 1.1.2) skips the whole step.
optimizer prodigy {
  hyper lr = 1.0
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  optional hyper beta3 = none   // unset: sqrt(beta2)
  hyper eps = 1e-8
  hyper estim_lr0 = 1e-6        // d's first value
  hyper estim_lr_coef = 1.0
  hyper weight_decay = 0.0
  hyper safeguard_warmup = false

  global d = 0           // the step size estimate (optax's estim_lr)
  global numerator = 0   // the decaying sum of d-weighted <g, p0 - p>

  state exp_avg = zeros
  state exp_avg_sq = zeros
  state grad_sum = zeros
  state p0 = p           // the parameter where training started

  prepare {
    if step == 1 {
      d = estim_lr0
    }
    var b3 = sqrt(beta2)
    if present(beta3) {
      b3 = beta3
    }
    let dlr = d * lr * sqrt(1 - beta2 ^ step) / (1 - beta1 ^ step)
    var sum_weight = dlr
    if safeguard_warmup {
      sum_weight = d
    }
  }

  update(p, g) {
    let dg = d * g
    exp_avg = beta1 * exp_avg + (1 - beta1) * dg
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * dg * dg
    grad_sum = b3 * grad_sum + sum_weight * dg / estim_lr0
    numerator = b3 * numerator + d / estim_lr0 * dlr * global_sum(g * (p0 - p))
    let denominator = global_sum(abs(grad_sum))
    if denominator > 0 {
      d = max(d, estim_lr_coef * numerator / denominator)
    }
    p = p - weight_decay * dlr * p - dlr * exp_avg / (sqrt(exp_avg_sq) + d * eps)
  }
}
