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

// torch.nn.utils.clip_grad_norm_: the directions of every parameter scaled together by
// min(1, max_norm / (norm + 1e-6)), norm their joint 2-norm (PyTorch's rule; optax's
// clip_by_global_norm above has no 1e-6 and leaves a norm equal to max_norm alone).
optimizer clip_grad_norm {
  hyper max_norm = 1.0

  update(p, u) {
    return u * min(1, max_norm / (global_norm(u) + 1e-6))
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

// Shampoo's preconditioner (Gupta, Koren, Singer, ICML 2018) as a transformation: statistics
// from the gradient g, applied to the direction u, `precondition_shampoo(g, u)` (Distributed
// Shampoo preconditions its filtered gradient). A matrix is preconditioned from both sides by
// the inverse fourth roots of the sums of g g^T and g^T g, a vector by the inverse square
// root of the sum of g g^T; the sums start at eps * I, and the roots are recomputed on steps
// 1, K+1, 2K+1, ... (K = precondition_frequency). eps is shampoo.gd's 1e-2, not Distributed
// Shampoo's 1e-12: eps * I is always added here, and a rank-deficient statistic accumulated
// in float32 then has rounding noise far above 1e-12 in its null space, which the root
// amplifies.
optimizer precondition_shampoo {
  hyper eps = 1e-2
  hyper precondition_frequency: int = 1 in 1..=1000000

  state L: [rows, rows] = eps * eye    // row statistics
  state R: [cols, cols] = eps * eye    // column statistics (matrices)
  state PL: [rows, rows] = eye         // their inverse roots, as last computed
  state PR: [cols, cols] = eye

  update(g: [rows, cols], u) {
    L = L + g @ g.T
    R = R + g.T @ g
    every precondition_frequency {
      PL = inv_root(L, 4)
      PR = inv_root(R, 4)
    }
    return PL @ u @ PR
  }

  update(g: [rows], u) {
    L = L + outer(g, g)
    every precondition_frequency {
      PL = inv_root(L, 2)
    }
    return PL @ u
  }
}

// Adam's diagonal preconditioner as a transformation: the bias-corrected moving average of
// g^2, applied to the direction u, `precondition_adam(g, u)` (Distributed Shampoo's Adam
// grafting).
optimizer precondition_adam {
  hyper beta2 = 0.999
  hyper eps = 1e-8

  state v = zeros

  update(g, u) {
    v = lerp(v, g * g, 1 - beta2)
    return u / (sqrt(v / (1 - beta2 ^ step)) + eps)
  }
}

// Grafting (Agarwal, Anil, Hazan, Koren, Zhang, "Disentangling Adaptive Gradient Methods
// from Learning Rates", 2020): the direction d at the norm of m, per parameter,
// `graft(m, d)`: Distributed Shampoo's default, Shampoo's direction at Adam's magnitude.
optimizer graft {
  update(m, d) {
    return d * (norm(m) / norm(d))
  }
}
