// The hand-written version this composed example replaced (runtime/tests/composition.rs
// checks that the composition compiles to the same plan and steps bit for bit like it).
// AdamW after global gradient-norm clipping, with a linear warmup and cosine decay of the
// learning rate: the usual recipe for transformer pre-training.
// Matches: optax.chain(optax.clip_by_global_norm(max_grad_norm),
//   optax.adamw(optax.warmup_cosine_decay_schedule(0, lr, warmup_steps, decay_steps, end_lr)))
// (golden case adamw_clip_cosine-default); optax reads the schedule at count = step - 1 and
// scales the decay by the scheduled rate.
optimizer adamw_clip_cosine {
  hyper lr = 1e-3
  hyper warmup_steps: int = 1000
  hyper decay_steps: int = 100000
  hyper end_lr = 1e-5
  hyper max_grad_norm = 1.0
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  state m = zeros   // first moment
  state v = zeros   // second moment

  prepare {
    let lr_t = warmup_cosine(step - 1, lr, warmup_steps, decay_steps, end_lr)
  }

  update(p, g) {
    // The norm of every gradient of the step together: a global stage, one pass over all
    // gradients before any parameter changes.
    let gnorm = global_norm(g)
    let gc = where(gnorm < max_grad_norm, g, g / gnorm * max_grad_norm)
    m = lerp(m, gc, 1 - beta1)
    v = lerp(v, gc * gc, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr_t * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)
  }
}
