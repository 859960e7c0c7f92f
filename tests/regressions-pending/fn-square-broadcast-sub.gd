// PENDING (not replayed): a function `fn f(x: [r, c])` whose body broadcasts a vector against x
//   is checked with distinct r and c; called with a square matrix it binds both to one dimension, and
//   the inlined `[cols] op [cols, cols]` is ambiguous (the IR cannot say which axis the vector repeats
//   along), so the IR verifier rejects the lowering. The fix belongs in compiler/src/lower.rs (materialise
//   the broadcast along the function's own axis) or dsl/src/check (refuse such a call); not done for lack
//   of time. The generator avoids calling [r, c] functions with square matrices until then.
// failed: internal error: internal compiler error: after lowering: IR verifier: in `update(p: [..., rows, cols])`, v6 = sub v5, v2 : f32: recorded type f32, but the arguments give no valid type
//   --- module ---
//   optimizer random
//   hyper lr: f32 = 0.2
//   state s3: [cols, cols]
//   
//   func prepare {
//   }
//   
//   func init(p: [..., rows, cols]) {
//     v0 = param : [rows, cols]
//     v1 = eye : [cols, cols]
// found by difftest: program seed 20261188783879 (shrunk)
// shapes: 1
// seeds: 2
// steps: 1

fn f1(x: [r, c]) -> [r, c] {
  return (mean(x, axis = 0) - x)
}

optimizer random {
  hyper lr = 0.2
  state s3: [cols, cols] = eye + 3

  update(p: [..., rows, cols], g) {
    s3 = f1(s3)
  }
}
