// expect: E0001
// `let` takes no type: the value's type is inferred. The caret is at the `:`.
optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    let d: tensor = lr * g
    p = p - d
  }
}
