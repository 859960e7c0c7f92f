// failed: internal error: internal compiler error: after lowering: IR verifier: in `update(p: [rows, cols])`, v9 = mul v2, v8 : f32: recorded type f32, but the arguments give no valid type
//   (`lerp(a, b, t)` of a `[rows]` a and a `[cols]` b is `[rows, cols]` to the checker, but the lowering
//   computed a + t * (b - a), whose `b - a` is `[cols, rows]`. Fixed in compiler/src/lower.rs: lowered as
//   a - (a - b) * t, the same value bit for bit with the operands in the checker's order.)
// found by difftest: program seed 20261188783759 (shrunk)
// shapes: 1x1 3x4
// seeds: 2
// steps: 1

optimizer random {
  hyper lr = 0.1
  state s3: bf16 [rows, cols] = 0.1

  update(p: [rows, cols], g) {
    let t14 = max_abs(g, axis = 1)
    s3 *= lerp(t14, sum(g, axis = 0), lr)
    p -= lr * s3
  }
}
