// expect: E0005
// The gradient always has the parameter's shape; a different type is an error.
optimizer sgd {
  hyper lr = 0.01
  update(p, g: [rows, cols]) {
    p = p - lr * g
  }
  update(p: [rows, cols], g: f32) {
    p = p - lr * g
  }
}
