// expect: E0005
// A shrunk random program that was an internal compiler error (the IR verifier after
// lowering) before calls binding two broadcast dimensions of a function to one were refused.
// found by difftest: program seed 20261188783879 (shrunk)
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
