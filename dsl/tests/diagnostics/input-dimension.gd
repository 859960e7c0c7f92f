// expect: E0028 E0028 E0009 E0020 W0009
// An input's own dimension (`batch`) must be contracted by `@`: read elementwise, or kept by
// the product, it is refused; `cols` needs a matrix update; an input has at most two
// dimensions; an input never read is warned about.
optimizer kfac_like {
  hyper lr = 0.01
  input a: [batch, cols]
  input s: [batch, rows]
  input big: [batch, rows, cols]
  input unused
  update(p: [rows, cols], g) {
    let x = sum(a)
    let y = s @ g
    let ok = a.T @ a / batch
    p = p - lr * (g @ ok) * x
  }
  update(p: [rows], g) {
    let z = a.T @ a
    p = p - lr * g
  }
}
