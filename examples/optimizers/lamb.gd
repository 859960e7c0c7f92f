// LAMB: the Adam step plus decoupled weight decay, rescaled per tensor by a trust ratio
// ||p|| / ||update|| so that every layer moves by a similar relative amount.
// Paper: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
// minutes" (ICLR 2020).
// Matches: optax.lamb (golden case lamb-default): bias-corrected Adam moments with eps added
// after the square root (eps_root = 0), u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p,
// and a trust ratio of 1 when either norm is zero.
optimizer lamb {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-6
  hyper weight_decay = 0.0

  state m = zeros   // first moment
  state v = zeros   // second moment

  update(p, g) {
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    let u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p
    let p_norm = norm(p)
    let u_norm = norm(u)
    let ratio = where(p_norm == 0 || u_norm == 0, 1, p_norm / u_norm)
    p = p - lr * ratio * u
  }
}
