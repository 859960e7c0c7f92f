// AdamW under the maximal update parametrization (muP): hyperparameters tuned on a small
// base model transfer to a wider one. The training code gives each parameter its base
// shape (ParamSpec::with_base_shape); `inf_dims` counts the dimensions that differ from it
// and `width_mult` is the fan-in over the base's.
// Matches: microsoft/mup's MuAdamW (golden case adamw_mup-default): a matrix-like parameter
// (two dimensions grow with width) gets lr / width_mult and weight_decay * width_mult;
// vector-like ones (embeddings, biases, the output head) keep lr and weight_decay.
// Composed: adamw.gd as a part, its lr and weight_decay bound per parameter where it is called.
use "adamw.gd"

optimizer adamw_mup {
  hyper lr = 1e-3
  hyper weight_decay = 0.01

  part adamw   // beta1, beta2, eps; state m, v

  update(p, g) {
    let matrix_like = inf_dims == 2
    let lr_p = where(matrix_like, lr / width_mult, lr)
    let decay_p = where(matrix_like, weight_decay * width_mult, weight_decay)
    p = adamw(p, g, lr = lr_p, weight_decay = decay_p)
  }
}
