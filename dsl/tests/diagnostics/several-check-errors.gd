// expect: E0002 E0003 E0004 E0005 E0006 E0007 E0014
// Every independent error of a file is reported in one run.
optimizer messy {
  hyper lr = 0.01
  hyper nesterov = true
  state m = zeros
  state v
  state r: [rows] = zeros
  update(p: [rows, cols], g) {
    lr = 0.1
    m = lerp(m, g)
    let a = v + g
    var s = 0
    s = g
    r = sum(g, axis = 0)
    let b = nesterov * 2
    p = p - lr * mm
  }
}
