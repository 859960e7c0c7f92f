// Adam: per-element step sizes from bias-corrected first and second moment estimates.
// Paper: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015).
// Matches: torch.optim.Adam (golden cases adam-default, adam-l2): weight decay is L2, added to
// the gradient before the moments (for decay applied to the weights, see adamw.gd), and eps is
// added after the square root of the bias-corrected second moment.
optimizer adam {
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
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
