// The hand-written version this composed example replaced (runtime/tests/composition.rs
// checks that the composition compiles to the same plan and steps bit for bit like it).
// AdamW under the maximal update parametrization (muP): hyperparameters tuned on a small
// base model transfer to a wider one. The training code gives each parameter its base
// shape (ParamSpec::with_base_shape); `inf_dims` counts the dimensions that differ from it
// and `width_mult` is the fan-in over the base's.
// Matches: microsoft/mup's MuAdamW (golden case adamw_mup-default): a matrix-like parameter
// (two dimensions grow with width) gets lr / width_mult and weight_decay * width_mult;
// vector-like ones (embeddings, biases, the output head) keep lr and weight_decay.
optimizer adamw_mup {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  state m = zeros   // first moment
  state v = zeros   // second moment

  update(p, g) {
    let matrix_like = inf_dims == 2
    let lr_p = where(matrix_like, lr / width_mult, lr)
    let decay_p = where(matrix_like, weight_decay * width_mult, weight_decay)
    p = p * (1 - lr_p * decay_p)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr_p * m_hat / (sqrt(v_hat) + eps)
  }
}
