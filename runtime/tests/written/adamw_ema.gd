// The hand-written version this composed example replaced (runtime/tests/composition.rs
// checks that the composition compiles to the same plan and steps bit for bit like it).
// AdamW with an exponential moving average of the weights, for evaluation: `ema` is
// ordinary state, read with Optimizer::state("w", "ema") or swapped into the parameters
// with Optimizer::swap_state("ema", ...) (swap again to swap back).
// Matches: torch.optim.AdamW followed by timm's ModelEmaV2 rule, ema = decay * ema +
// (1 - decay) * p, starting at the initial parameters (golden case adamw_ema-default).
optimizer adamw_ema {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01
  hyper ema_decay = 0.999

  state m = zeros   // first moment
  state v = zeros   // second moment
  state ema = p     // the average, from the parameters the first step receives

  update(p, g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
    ema = lerp(ema, p, 1 - ema_decay)
  }
}
