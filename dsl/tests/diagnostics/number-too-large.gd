// expect: E0019
// Every value reaches the kernels as f32, which holds values up to about 3.4e38.
optimizer sgd {
  hyper lr = 0.01
  hyper clip = 1e39
  update(p, g) {
    p = p - lr * g * 1e99
  }
}
