// expect: E0029
// Two parts that keep their names both declare `v` and `eps`: one of them needs a name of
// its own, which puts its names under a prefix.
optimizer scale_by_rms {
  hyper beta = 0.99
  hyper eps = 1e-8
  state v = zeros
  update(p, u) {
    v = lerp(v, u * u, 1 - beta)
    return u / (sqrt(v) + eps)
  }
}

optimizer scale_by_belief {
  hyper beta2 = 0.999
  hyper eps = 1e-16
  state v = zeros
  update(p, u) {
    v = lerp(v, u * u, 1 - beta2)
    return u / (sqrt(v) + eps)
  }
}

optimizer both {
  hyper lr = 0.01
  part scale_by_rms
  part scale_by_belief
  update(p, g) {
    p = p - lr * scale_by_belief(p, scale_by_rms(p, g))
  }
}
