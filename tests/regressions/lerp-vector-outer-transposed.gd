// failed: internal error: internal compiler error: after lowering: IR verifier: in `update(p: [rows, cols])`, v10 = mul v2, v9 : f32: recorded type f32, but the arguments give no valid type
//   (the same lerp bug as lerp-vector-outer.gd, into a `[cols, rows]` state.)
// found by difftest: program seed 20261188783785 (shrunk)
// shapes: 2x3 4x1
// seeds: 1
// steps: 1

optimizer random {
  hyper lr = 0.3
  hyper h2: int = 3 in 0..=3
  state s5: bf16 [cols, rows] = zeros
  state s7: [cols, cols] = lr + 3

  update(p: [rows, cols], g) {
    let t13 = max_abs(s7, axis = 1)
    s5 *= lerp(t13, sum(g, axis = 1), h2)
    p -= lr * s5.T / (1 + norm(s5))
  }
}
