// RAdam: Adam whose adaptive step is turned on only once the variance of the adaptive
// learning rate is tractable, and then scaled by a rectification term; before that, plain
// bias-corrected momentum SGD.
// Paper: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020).
// Matches: torch.optim.RAdam (golden case radam-default): rectified when rho_t > 5, eps is
// added after the square root of the (uncorrected) second moment, and weight decay is added
// to the gradient (decoupled_weight_decay = False).
optimizer radam {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.0

  state m = zeros   // first moment
  state v = zeros   // second moment

  update(p, g) {
    let d = g + weight_decay * p
    m = lerp(m, d, 1 - beta1)
    v = lerp(v, d * d, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let bc2 = 1 - beta2 ^ step
    let rho_inf = 2 / (1 - beta2) - 1
    let rho_t = rho_inf - 2 * step * beta2 ^ step / bc2
    if rho_t > 5 {
      let rect = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
      p = p - lr * m_hat * sqrt(bc2) / (sqrt(v) + eps) * rect
    } else {
      p = p - lr * m_hat
    }
  }
}
