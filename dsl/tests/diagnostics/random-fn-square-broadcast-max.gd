// expect: E0005
// A shrunk random program that was an internal compiler error (the IR verifier after
// lowering) before calls binding two broadcast dimensions of a function to one were refused.
// found by difftest: program seed 20261188783774 (shrunk)
fn f5(x: [r, c]) -> [r, c] {
  return max(mean(((x @ x.T) / (1 + norm(x))), axis = 1), x)
}

optimizer random {
  hyper lr = 0.1

  update(p: [rows, cols], g) {
    p = (g.T @ f5(((g @ g.T) / (1 + norm(g))))).T
  }
}
