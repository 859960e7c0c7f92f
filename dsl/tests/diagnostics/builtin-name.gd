// expect: E0012
// `step`, `numel`, `rows`, `cols`, `fan_in` and `fan_out` are built-in names.
optimizer sgd {
  hyper step = 0.01
  state numel = zeros
  update(p: [rows, cols], g) {
    let rows = 2
    for cols in 0..3 {
      p = p - 0.01 * g
    }
  }
}
