// K-FAC: natural-gradient descent with the Fisher of each linear layer approximated by the
// Kronecker product of two small factors, A = E[a aᵀ] over the layer's inputs and
// G = E[s sᵀ] over the gradients at its outputs. Their eigendecompositions, refreshed every
// tinv steps, give the damped inverse in closed form; a KL clip over every parameter bounds
// the step, then SGD with momentum.
// Paper: Martens & Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate
// Curvature" (ICML 2015).
// Matches: alecwangcq/KFAC-Pytorch 25e6dbe `KFACOptimizer` for bias-free nn.Linear weights
// [out, in] (golden case kfac-default): k = step - 1 counts as the reference's `steps`; the
// factors start at I and are averaged every tcov steps; eigenvalues at or below 1e-10 count as
// zero; the eigendecompositions run in float32 as the reference's do; weight decay starts once
// k >= 20 * tcov (hard-coded in the reference).
optimizer kfac {
  hyper lr = 0.01
  hyper momentum = 0.9
  hyper stat_decay = 0.95
  hyper damping = 1e-3
  hyper kl_clip = 1e-3
  hyper weight_decay = 0.0
  hyper tcov: int = 10 in 1..=1000000
  hyper tinv: int = 100 in 1..=1000000

  // Per layer and step: its input activations and the loss's gradient at its output (as a
  // backward hook sees it: for a mean loss, already divided by the batch). Read only on the
  // steps that average the factors (gdc.torch's hooks record them only then).
  input a: [batch, cols]
  input s: [batch, rows]

  state A: [cols, cols] = eye   // Kronecker factors
  state G: [rows, rows] = eye
  state QA: [cols, cols] = eye  // their eigenvectors and eigenvalues, kept between refreshes
  state dA: [cols] = zeros
  state QG: [rows, rows] = eye
  state dG: [rows] = zeros
  state buf = zeros             // momentum

  update(p: [rows, cols], g) {
    let k = step - 1
    if k % tcov == 0 {
      // The reference's running average: (x * d / (1 - d) + new) * (1 - d).
      A = (A * (stat_decay / (1 - stat_decay)) + a.T @ a / batch) * (1 - stat_decay)
      G = (G * (stat_decay / (1 - stat_decay)) + s.T @ s * batch) * (1 - stat_decay)
    }
    if k % tinv == 0 {
      // In float32, as the reference's torch.symeig on float32 factors.
      QA = eigvecs(A, precision = f32)
      QG = eigvecs(G, precision = f32)
      // Each eigenvalue as its vector's Rayleigh quotient: one product, not a second
      // decomposition, and paired with its vector whatever the order.
      let ea = sum(QA * (A @ QA), axis = 0)
      let eg = sum(QG * (G @ QG), axis = 0)
      dA = where(ea > 1e-10, ea, 0)
      dG = where(eg > 1e-10, eg, 0)
    }
    // V solves G V A + damping V = g in the kept eigenbases.
    let v = QG @ ((QG.T @ g @ QA) / (outer(dG, dA) + damping)) @ QA.T
    let nu = min(1, sqrt(kl_clip / global_sum(v * g * lr ^ 2)))
    var d = nu * v
    if weight_decay != 0 && k >= 20 * tcov {
      d = d + weight_decay * p
    }
    buf = buf * momentum + d
    p = p - lr * buf
  }
}
