// expect: E0019 E0027
// Optional hyperparameters: one read where it may be unset, a `none` default on one that is
// not optional, `present` of one that is always set, and an optional bool.
optimizer clipped_sgd {
  hyper lr = 0.1
  hyper momentum = none
  optional hyper max_norm = none
  optional hyper nesterov = false
  update(p, g) {
    let norm = global_norm(g)
    let scale = min(1, max_norm / norm)
    if present(lr) {
      p = p - lr * g * scale
    }
  }
}
