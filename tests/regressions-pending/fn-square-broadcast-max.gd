// PENDING (not replayed): a function `fn f(x: [r, c])` whose body broadcasts a vector against x
//   is checked with distinct r and c; called with a square matrix it binds both to one dimension, and
//   the inlined `[cols] op [cols, cols]` is ambiguous (the IR cannot say which axis the vector repeats
//   along), so the IR verifier rejects the lowering. The fix belongs in compiler/src/lower.rs (materialise
//   the broadcast along the function's own axis) or dsl/src/check (refuse such a call); not done for lack
//   of time. The generator avoids calling [r, c] functions with square matrices until then.
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
