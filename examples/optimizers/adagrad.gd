// Adagrad: each element's step is divided by the root of its summed squared gradients.
// Paper: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
// Stochastic Optimization" (JMLR 2011).
// Matches: torch.optim.Adagrad (golden case adagrad-default): the sum starts at
// initial_accumulator_value, the learning rate decays as lr / (1 + (step - 1) * lr_decay),
// weight decay is added to the gradient, and eps is added after the square root.
optimizer adagrad {
  hyper lr = 1e-2
  hyper lr_decay = 0.0
  hyper weight_decay = 0.0
  hyper initial_accumulator_value = 0.0
  hyper eps = 1e-10

  state sum_sq = initial_accumulator_value   // running sum of squared gradients

  update(p, g) {
    let d = g + weight_decay * p
    let clr = lr / (1 + (step - 1) * lr_decay)
    sum_sq = sum_sq + d * d
    p = p - clr * d / (sqrt(sum_sq) + eps)
  }
}
