// failed: internal error: internal compiler error: after lowering: IR verifier: in `update(p: [rows, cols])`, v22 = max v21, v10 : f32: recorded type f32, but the arguments give no valid type
//   --- module ---
//   optimizer random
//   hyper lr: f32 = 0.1
//   
//   func prepare {
//   }
//   
//   func init(p: [rows, cols]) {
//     v0 = param : [rows, cols]
//   }
//   
// found by difftest: program seed 20261188783774 (shrunk)
// shapes: 1x1x1
// seeds: 2
// steps: 1

fn f5(x: [r, c]) -> [r, c] {
  return max(mean(((x @ x.T) / (1 + norm(x))), axis = 1), x)
}

optimizer random {
  hyper lr = 0.1

  update(p: [rows, cols], g) {
    p = (g.T @ f5(((g @ g.T) / (1 + norm(g))))).T
  }
}
