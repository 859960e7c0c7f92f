// failed: internal error: the CPU backend cannot compile this optimizer: kernel k0 broadcasts over a domain of shape Dims(["rows"]), which is not a matrix
//   (a vector reduced with `axis = 0` was lowered as an axis reduction, which kernels only do over a matrix;
//   on wider programs the IR verifier rejected it after lowering instead. Fixed in compiler/src/lower.rs:
//   a vector's reduction along its only axis is lowered as a whole reduction.)
// found by difftest: program seed 20261188783435 (shrunk)
// shapes: 1 7
// seeds: 2
// steps: 1

optimizer random {
  hyper lr = 0.1

  update(p: [rows], g) {
    p += norm(g, axis = 0)
  }
}
