// SM3: Adagrad's per-element accumulator, kept in memory linear in the dimensions: one
// accumulator per row and one per column of a matrix; an element's own is rebuilt each step
// as the smaller of its row's and column's, plus g², and each row and column keeps the
// largest of its elements'. A momentum of the scaled gradient follows.
// Paper: Anil, Gupta, Koren, Singer, "Memory-Efficient Adaptive Optimization" (NeurIPS 2019).
// Matches: optax 0.2.8's sm3 (golden case sm3-optax): scale_by_sm3 with b2 = 1 (the
// accumulators only grow), g / sqrt(nu + eps) where nu > 0 and 0 elsewhere, the momentum
// nu = momentum * nu + (1 - momentum) * that, then -lr. Vectors keep a whole accumulator
// (optax's rank-1 case). A parameter of rank 3 or more (a convolution kernel) or a scalar
// takes the last update: one accumulator per index of each of its axes (`[axes]`: a
// [3, 4, 5] tensor keeps 3 + 4 + 5), an element's own the smallest of its indices', each
// index's the largest over its elements (optax's cover). The matrix and vector updates are
// that same cover for rank 2 and 1, written so that each step is one fused pass.
optimizer sm3 {
  hyper lr = 0.1
  hyper momentum = 0.9
  hyper eps = 1e-8

  state acc_rows: [rows] = zeros   // per row: the largest accumulator of its elements
  state acc_cols: [cols] = zeros   // per column
  state acc_axes: [axes] = zeros   // rank 3 or more: per axis, per index
  state mom = zeros                // the momentum of the scaled gradient

  update(p: [rows, cols], g) {
    let acc = g * g + min(acc_rows + 0 * g, acc_cols + 0 * g)
    let u = where(acc > 0, g * rsqrt(acc + eps), 0)
    mom = lerp(u, mom, momentum)
    acc_rows = max(acc, axis = 1)
    acc_cols = max(acc, axis = 0)
    p = p - lr * mom
  }

  update(p: [rows], g) {
    let acc = g * g + acc_rows
    let u = where(acc > 0, g * rsqrt(acc + eps), 0)
    mom = lerp(u, mom, momentum)
    acc_rows = acc
    p = p - lr * mom
  }

  update(p, g) {
    let acc = g * g + axis_min(acc_axes)
    let u = where(acc > 0, g * rsqrt(acc + eps), 0)
    mom = lerp(u, mom, momentum)
    acc_axes = axis_max(acc)
    p = p - lr * mom
  }
}
