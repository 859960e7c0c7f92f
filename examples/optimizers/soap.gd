// SOAP: Adam run in the eigenbasis of Shampoo's preconditioner. The row and column statistics
// L and R are averaged like Shampoo's; the gradient is rotated into their eigenvectors, Adam
// steps there, and the step is rotated back. The eigenbasis is refreshed every
// precondition_frequency steps by one power iteration and a QR decomposition.
// Paper: Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam" (ICLR 2025).
// Matches: the authors' implementation, nikhilvyas/SOAP a1e5535 (golden case soap-default),
// with its defaults (no dimension merging, vectors not preconditioned): the first step only
// builds the eigenbasis (eigenvectors by eigenvalue, largest first) and leaves the
// parameter alone; Adam's moments live in the eigenbasis and its bias correction counts
// from the second step; weight decay follows the step; a refresh sorts the basis by the
// estimated eigenvalues diag(Q^T L Q), permutes the second moment the same way, and
// re-expresses the first moment in the new basis.
optimizer soap {
  hyper lr = 3e-3
  hyper beta1 = 0.95
  hyper beta2 = 0.95
  hyper shampoo_beta = -1.0   // negative: use beta2
  hyper eps = 1e-8
  hyper weight_decay = 0.01
  hyper precondition_frequency: int = 10

  state m = zeros                  // Adam's moments, in the eigenbasis for matrices
  state v = zeros
  state L: [rows, rows] = zeros    // row and column statistics
  state R: [cols, cols] = zeros
  state QL: [rows, rows] = eye     // their eigenbases
  state QR: [cols, cols] = eye

  update(p: [rows, cols], g) {
    let decay = 1 - where(shampoo_beta >= 0, shampoo_beta, beta2)
    if step == 1 {
      L = lerp(L, g @ g.T, decay)
      R = lerp(R, g.T @ g, decay)
      QL = eigvecs(L) @ sort_perm(eigvals(L))
      QR = eigvecs(R) @ sort_perm(eigvals(R))
    } else {
      let t = step - 1
      let g_rot = QL.T @ g @ QR
      m = lerp(m, g_rot, 1 - beta1)
      v = lerp(v, g_rot * g_rot, 1 - beta2)
      let size = lr * sqrt(1 - beta2 ^ t) / (1 - beta1 ^ t)
      p = p - size * (QL @ (m / (sqrt(v) + eps)) @ QR.T)
      p = p * (1 - lr * max(weight_decay, 0))
      L = lerp(L, g @ g.T, decay)
      R = lerp(R, g.T @ g, decay)
      if t % precondition_frequency == 0 {
        let m_orig = QL @ m @ QR.T
        let sort_l = sort_perm(sum(QL * (L @ QL), axis = 0))
        let sort_r = sort_perm(sum(QR * (R @ QR), axis = 0))
        v = sort_l.T @ v @ sort_r
        QL = qr(L @ QL @ sort_l)
        QR = qr(R @ QR @ sort_r)
        m = QL.T @ m_orig @ QR
      }
    }
  }

  // Vectors are not preconditioned: Adam, with the first step skipped as for matrices.
  update(p, g) {
    if step > 1 {
      let t = step - 1
      m = lerp(m, g, 1 - beta1)
      v = lerp(v, g * g, 1 - beta2)
      p = p - lr * sqrt(1 - beta2 ^ t) / (1 - beta1 ^ t) * m / (sqrt(v) + eps)
      p = p * (1 - lr * max(weight_decay, 0))
    }
  }
}
