// C-AdamW: AdamW whose direction is masked where its sign disagrees with the gradient's.
// Paper: Liang, Chen, Liu, Liu, "Cautious Optimizers: Improving Training with One Line of
// Code" (2024).
// Matches: the authors' C-AdamW (kyleliang919/C-Optim, c_adamw.py; golden case
// cautious_adamw-authors): decay p -= lr * weight_decay * p first, then Adam in the form of
// HF transformers' AdamW (eps added to sqrt(v), both bias corrections in the step size).
// Composed: the cautious transformation (../parts/transforms.gd) around this file's Adam
// direction.
use "../parts/transforms.gd"

// Adam's direction as HF transformers' AdamW computes it.
optimizer scale_by_adam_hf {
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-6

  state m = zeros   // first moment
  state v = zeros   // second moment

  update(p, u) {
    m = lerp(m, u, 1 - beta1)
    v = lerp(v, u * u, 1 - beta2)
    return m / (sqrt(v) + eps) * (sqrt(1 - beta2 ^ step) / (1 - beta1 ^ step))
  }
}

optimizer cautious_adamw {
  hyper lr = 1e-3
  hyper weight_decay = 0.0

  part scale_by_adam_hf
  part cautious

  update(p, g) {
    p = p - lr * weight_decay * p
    p = p - lr * cautious(g, scale_by_adam_hf(p, g))
  }
}
