policy pp {
  _ -> adamw
}
use "a.gd" {
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
use "m.gd" {
// SGD: stochastic gradient descent with optional (heavy-ball or Nesterov) momentum and L2
// weight decay added to the gradient.
// Paper: Sutskever et al., "On the importance of initialization and momentum in deep
// learning" (ICML 2013) for the momentum form used here.
// Matches: torch.optim.SGD (golden cases sgd-plain, sgd-nesterov, sgd-dampened): the momentum
// buffer starts as a copy of the first gradient (no dampening on that step); momentum = 0 is
// plain SGD.
optimizer sgd {
  hyper lr = 1e-3
  hyper momentum = 0.0
  hyper dampening = 0.0
  hyper weight_decay = 0.0
  hyper nesterov = false

  state buf = zeros   // momentum buffer

  update(p, g) {
    var d = g + weight_decay * p
    if momentum != 0 {
      buf = where(step == 1, d, momentum * buf + (1 - dampening) * d)
      d = where(nesterov, d + momentum * buf, buf)
    }
    p = p - lr * d
  }
}
}
}
