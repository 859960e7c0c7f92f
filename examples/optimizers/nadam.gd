// NAdam: Adam with Nesterov momentum, with a momentum schedule that warms up over time.
// Paper: Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop).
// Matches: torch.optim.NAdam (golden case nadam-default): mu_t = beta1 * (1 - 0.5 *
// 0.96^(step * momentum_decay)), the bias correction of the first moment is the running
// product of mu_t, weight decay is added to the gradient (decoupled_weight_decay = False),
// and eps is added after the square root of the bias-corrected second moment.
optimizer nadam {
  hyper lr = 2e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.0
  hyper momentum_decay = 4e-3

  // The product of mu_1 .. mu_step: the same for every parameter, carried across steps.
  global mu_product = 1

  state m = zeros   // first moment
  state v = zeros   // second moment

  prepare {
    let mu = beta1 * (1 - 0.5 * 0.96 ^ (step * momentum_decay))
    let mu_next = beta1 * (1 - 0.5 * 0.96 ^ ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    let g_coef = lr * (1 - mu) / (1 - mu_product)
    let m_coef = lr * mu_next / (1 - mu_product * mu_next)
  }

  update(p, g) {
    let d = g + weight_decay * p
    m = lerp(m, d, 1 - beta1)
    v = lerp(v, d * d, 1 - beta2)
    let denom = sqrt(v / (1 - beta2 ^ step)) + eps
    p = p - g_coef * d / denom - m_coef * m / denom
  }
}
