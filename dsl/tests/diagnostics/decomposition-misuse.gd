// expect: E0005 E0009 E0020
optimizer soap_like {
  state QL: [rows, rows] = eye
  update(p: [rows, cols], g) {
    let a = eigvecs(g)
    let b = eigvals(g @ g.T) + eigvals(g)
    let c = sort_perm(g)
    QL = qr(QL) @ eigvecs(g @ g.T) @ sort_perm(b)
    p = p - g
  }
  update(p, g) {
    p = p - qr(g)
  }
}
