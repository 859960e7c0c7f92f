// Adamax: Adam with the second moment replaced by an exponentially weighted infinity norm.
// Paper: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015), section 7.1.
// Matches: torch.optim.Adamax (golden case adamax-default): eps is added to |g| inside the
// max (u = max(beta2 * u, |g| + eps)), only the first moment is bias-corrected (on the step
// size), and weight decay is added to the gradient.
optimizer adamax {
  hyper lr = 2e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.0

  state m = zeros       // first moment
  state exp_inf = zeros // exponentially weighted infinity norm

  update(p, g) {
    let d = g + weight_decay * p
    m = lerp(m, d, 1 - beta1)
    exp_inf = max(beta2 * exp_inf, abs(d) + eps)
    let clr = lr / (1 - beta1 ^ step)
    p = p - clr * m / exp_inf
  }
}
