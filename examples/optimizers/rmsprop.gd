// RMSprop: the gradient divided by the root of a moving average of its square; optionally
// centered (the average's variance rather than its second moment) and with momentum.
// Paper: Tieleman & Hinton, "Lecture 6.5 - RMSProp" (COURSERA: Neural Networks for Machine
// Learning, 2012); centered form from Graves, "Generating Sequences With Recurrent Neural
// Networks" (2013).
// Matches: torch.optim.RMSprop (golden cases rmsprop-plain, rmsprop-centered): weight decay
// is added to the gradient, eps is added after the square root, and the momentum buffer
// accumulates the scaled gradient (buf = momentum * buf + g / avg).
optimizer rmsprop {
  hyper lr = 1e-2
  hyper alpha = 0.99
  hyper eps = 1e-8
  hyper weight_decay = 0.0
  hyper momentum = 0.0
  hyper centered = false

  state square_avg = zeros   // moving average of g^2
  state grad_avg = zeros     // centered: moving average of g
  state buf = zeros          // momentum > 0: momentum buffer

  update(p, g) {
    let d = g + weight_decay * p
    square_avg = lerp(square_avg, d * d, 1 - alpha)
    var mean_sq = square_avg   // centered: the variance estimate instead
    if centered {
      grad_avg = lerp(grad_avg, d, 1 - alpha)
      mean_sq = square_avg - grad_avg * grad_avg
    }
    let avg = sqrt(mean_sq) + eps
    if momentum > 0 {
      buf = momentum * buf + d / avg
      p = p - lr * buf
    } else {
      p = p - lr * d / avg
    }
  }
}
