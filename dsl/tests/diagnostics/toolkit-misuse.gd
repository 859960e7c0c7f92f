// expect: E0023 E0004 E0018
optimizer misuse {
  hyper lr = 0.01

  prepare {
    let n = global_norm(lr)
    let s = ramp(step, 0, 10, 0, lr)
  }

  update(p, g) {
    let bad = has_role(weights)
    let v = cosine_ramp(g, 0, 10, lr, 0)
    p = p - s * g
  }
}
