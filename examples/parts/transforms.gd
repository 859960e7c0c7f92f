// Transformations: the stages optax chains (clip_by_global_norm, scale_by_adam,
// add_decayed_weights, ...). Each is an update that returns a direction instead of assigning
// its parameter; an optimizer calls them as parts, innermost first, and the whole compiles to
// one optimizer: `p = p - lr * add_decayed_weights(p, scale_by_adam(p, g))`.

// optax.clip_by_global_norm: the directions of every parameter scaled together so that their
// joint norm is at most max_norm (a global stage: one pass over all of them first).
optimizer clip_by_global_norm {
  hyper max_norm = 1.0

  update(p, u) {
    let norm = global_norm(u)
    return where(norm < max_norm, u, u / norm * max_norm)
  }
}

// optax.scale_by_adam: Adam's bias-corrected first moment over the root of its second.
optimizer scale_by_adam {
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8

  state m = zeros   // first moment
  state v = zeros   // second moment

  update(p, u) {
    m = lerp(m, u, 1 - beta1)
    v = lerp(v, u * u, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    return m_hat / (sqrt(v_hat) + eps)
  }
}

// optax.add_decayed_weights: decoupled weight decay added to the direction.
optimizer add_decayed_weights {
  hyper weight_decay = 0.0

  update(p, u) {
    return u + weight_decay * p
  }
}

// Cautious masking (Liang, Chen, Liu, Liu, "Cautious Optimizers: Improving Training with One
// Line of Code", 2024): the direction u zeroed where its sign disagrees with the gradient g's,
// the rest divided by the fraction kept (at least 1e-3), as the authors' C-AdamW and timm do.
// Called as `cautious(g, u)`: the gradient in the parameter's place.
optimizer cautious {
  update(g, u) {
    let mask = where(u * g > 0, 1, 0)
    return u * (mask / max(mean(mask), 1e-3))
  }
}
