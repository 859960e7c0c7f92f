// Adafactor: Adam-like steps with a factored second moment — for a matrix, one statistic
// per row and one per column instead of one per element — and an update clipped by its RMS.
// Paper: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
// (ICML 2018).
// Matches: torch.optim.Adafactor, _single_tensor_adafactor (golden case adafactor-default).
// The running averages take the new g^2 with weight step^beta2_decay (torch's
// one_minus_beta2_t, so beta2_t = 1 - step^beta2_decay), the step size is
// min(lr, 1/sqrt(step)) times the parameter's RMS (at least eps2) measured before weight
// decay, weight decay is decoupled (p *= 1 - lr * weight_decay), eps1 is float32's machine
// epsilon (clamping both the row mean and the variance estimate), and the update is divided
// by max(1, RMS(u) / d). Vectors keep a full second moment.
// Rank-3+ parameters: torch factors the last two dimensions per leading index; here every
// parameter of rank 2 or more is factored as [first dimension, product of the rest], which
// agrees with torch only for matrices.
optimizer adafactor {
  hyper lr = 1e-2
  hyper beta2_decay = -0.8
  hyper eps2 = 1e-3
  hyper d = 1.0
  hyper weight_decay = 0.0

  state row_var: [rows] = zeros   // matrices: mean of g^2 along each row
  state col_var: [cols] = zeros   // matrices: mean of g^2 along each column
  state variance = zeros          // vectors: the full second moment

  update(p: [rows, cols], g) {
    let eps1 = 1.1920929e-7
    let one_minus_beta2_t = step ^ beta2_decay   // weight of the new g^2
    let alpha = max(eps2, norm(p) / sqrt(numel)) * min(lr, 1 / sqrt(step))
    p = p * (1 - lr * weight_decay)
    row_var = lerp(row_var, sum(g * g, axis = 1) / cols, one_minus_beta2_t)
    col_var = lerp(col_var, sum(g * g, axis = 0) / rows, one_minus_beta2_t)
    let v_est = row_var * col_var / max(mean(row_var), eps1)   // outer product
    let u = g * rsqrt(max(v_est, eps1 * eps1))
    p = p - alpha / max(1, norm(u) / (sqrt(numel) * d)) * u
  }

  update(p, g) {
    let eps1 = 1.1920929e-7
    let one_minus_beta2_t = step ^ beta2_decay   // weight of the new g^2
    let alpha = max(eps2, norm(p) / sqrt(numel)) * min(lr, 1 / sqrt(step))
    p = p * (1 - lr * weight_decay)
    variance = lerp(variance, g * g, one_minus_beta2_t)
    let u = g * rsqrt(max(variance, eps1 * eps1))
    p = p - alpha / max(1, norm(u) / (sqrt(numel) * d)) * u
  }
}
