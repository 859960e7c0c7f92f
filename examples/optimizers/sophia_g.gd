// Sophia-G: sign descent on a momentum, clipped per coordinate by a diagonal Hessian
// estimate, where the estimate is refreshed every few steps from a gradient taken with labels
// sampled from the model (the Gauss-Newton-Bartlett estimator: bs * h * h).
// Paper: Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
// Pre-training" (ICLR 2024).
// Matches: Liuhong99/Sophia a7e1572 `SophiaG` with train_sophiag.py's refresh (golden case
// sophia_g-default): the input `h` comes only with the steps that refresh the estimate
// (`gdc.torch.sophia_hessian_sample` makes it), hess starts at zero, decoupled weight decay.
optimizer sophia_g {
  hyper lr = 1e-4
  hyper beta1 = 0.965
  hyper beta2 = 0.99
  hyper rho = 0.04
  hyper weight_decay = 0.1
  hyper bs = 5120.0   // the examples (tokens) whose mean loss gave h: train_sophiag.py's total_bs * block_size

  // The sampled-label gradient of the minibatch's mean loss, on refresh steps only.
  optional input h

  state m = zeros      // momentum
  state hess = zeros   // EMA of the Hessian-diagonal samples h * h

  update(p, g) {
    if present(h) {
      hess = hess * beta2 + (1 - beta2) * h * h
    }
    p = p * (1 - lr * weight_decay)
    m = m * beta1 + (1 - beta1) * g
    let ratio = min(abs(m) / (rho * bs * hess + 1e-15), 1)
    p = p - lr * sign(m) * ratio
  }
}
