// expect: E0003
optimizer sm3_like {
  hyper lr = 0.1
  state acc_r: [rows] = zeros
  state acc_c: [cols] = zeros
  update(p: [rows, cols], g) {
    let nu = min(acc_r, acc_c) + g * g
    acc_r = max(nu, axis = 1)
    acc_c = min(nu)
    p = p - lr * g / sqrt(nu + 1e-30)
  }
}
