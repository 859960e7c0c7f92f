// AdamW with the C reference loop's arithmetic (../shared/tools/reference/opt.c): the bias
// corrections folded into a step size and a reciprocal square root once per step, so each
// element costs one square root and one division, as in the C loop (examples/optimizers/adamw.gd
// divides three times, as written in the paper and as torch's results round). For
// bench/scripts/tiers.py: the same arithmetic on both sides shows the kernels against the
// C loop itself.
optimizer adamw_c {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01
  state m = zeros
  state v = zeros
  update(p, g) {
    let step_size = lr / (1 - beta1 ^ step)
    let inv_bc2_sqrt = 1 / sqrt(1 - beta2 ^ step)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p * (1 - lr * weight_decay) - step_size * m / (sqrt(v) * inv_bc2_sqrt + eps)
  }
}
