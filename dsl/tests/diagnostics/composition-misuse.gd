// expect: E0002 E0003 E0018 E0029
// Every misuse of parts in one run: a part of no known optimizer, a hyperparameter the part
// does not have, a call without its direction, a call inside a loop, a part called twice.
optimizer scale_by_rms {
  hyper beta = 0.99
  hyper eps = 1e-8
  state v = zeros
  update(p, u) {
    v = lerp(v, u * u, 1 - beta)
    return u / (sqrt(v) + eps)
  }
}

optimizer rms_sgd {
  hyper lr = 0.01
  part scale_by_rms
  part momentum = heavy_ball
  part rms2 = scale_by_rms
  part rms3 = scale_by_rms
  update(p, g) {
    let u = scale_by_rms(p, g, beta1 = 0.9)
    let w = rms2(p)
    for i in 0..2 {
      let z = rms3(p, g)
    }
    p = p - lr * scale_by_rms(p, u)
  }
}
