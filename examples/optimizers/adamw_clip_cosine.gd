// AdamW after global gradient-norm clipping, with a linear warmup and cosine decay of the
// learning rate: the usual recipe for transformer pre-training.
// Matches: optax.chain(optax.clip_by_global_norm(max_grad_norm),
//   optax.adamw(optax.warmup_cosine_decay_schedule(0, lr, warmup_steps, decay_steps, end_lr)))
// (golden case adamw_clip_cosine-default); optax reads the schedule at count = step - 1 and
// scales the decay by the scheduled rate.
// Composed as optax composes it: a chain of transformations (../parts/transforms.gd), the
// innermost first, then the scheduled step.
use "../parts/transforms.gd"

optimizer adamw_clip_cosine {
  hyper lr = 1e-3
  hyper warmup_steps: int = 1000
  hyper decay_steps: int = 100000
  hyper end_lr = 1e-5
  hyper max_grad_norm = 1.0
  hyper weight_decay = 0.01

  part clip_by_global_norm   // a global stage: every gradient's norm together
  part scale_by_adam         // beta1, beta2, eps; state m, v
  part add_decayed_weights

  prepare {
    let lr_t = warmup_cosine(step - 1, lr, warmup_steps, decay_steps, end_lr)
  }

  update(p, g) {
    let clipped = clip_by_global_norm(p, g, max_norm = max_grad_norm)
    p = p - lr_t * add_decayed_weights(p, scale_by_adam(p, clipped), weight_decay = weight_decay)
  }
}
