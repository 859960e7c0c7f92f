// AdamW: Adam with decoupled weight decay.
// Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
// Matches: torch.optim.AdamW and optax.adamw (golden cases adamw-default, adamw-optax).
optimizer adamw {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  state m = zeros   // first moment
  state v = zeros   // second moment

  update(p, g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
