// Muon: momentum, then the update orthogonalised by a Newton–Schulz iteration, so every
// direction of a weight matrix moves by the same amount.
// Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
// Matches: torch.optim.Muon, _single_tensor_muon (golden cases muon-default, muon-f32):
// buf = lerp(buf, g, 1 - momentum), Nesterov (when on) as torch's g.lerp(buf, momentum),
// the matrix divided by max(Frobenius norm, eps), ns_steps quintic Newton–Schulz steps with
// Keller Jordan's coefficients (3.4445, -4.775, 2.0315) on the wide orientation of the
// matrix, decoupled weight decay with the unscaled lr, and the update's lr scaled by
// sqrt(max(1, rows / cols)). The golden cases fix the coefficients and the normalisation:
// Polar Express coefficients or Schatten normalisation miss them by hundreds of tolerances.
// ns_steps goes up to 99, as torch (it refuses 100 or more). Matrices only: route vectors
// elsewhere. Leading dimensions are a batch of matrices, each orthogonalised on its own
// (stacked experts [E, out, in], a fused QKV declared [3, d, d]); a convolution filter the
// user wants flattened is passed as [out, in*kh*kw].
// ns_precision: the Newton–Schulz products' operands are rounded to bfloat16 (sums in float32),
// as torch's bfloat16 iteration multiplies them; `f32` keeps float32 (golden case muon-f32).

// `steps` quintic Newton–Schulz steps, x <- a x + (b A + c A^2) x with A = x x^T: they push
// every singular value of x towards 1, keeping its singular vectors.
fn newton_schulz(x0: [m, n], steps: int) -> [m, n] {
  let (a, b, c) = (3.4445, -4.775, 2.0315)
  var x = x0
  for i in 0..steps {
    let gram = x @ x.T
    x = a * x + (b * gram + c * (gram @ gram)) @ x
  }
  return x
}

optimizer muon {
  hyper lr = 1e-3
  hyper weight_decay = 0.1
  hyper momentum = 0.95
  hyper nesterov = true
  hyper ns_steps: int = 5 in 0..=99
  hyper eps = 1e-7
  hyper ns_precision = bf16

  state buf = zeros

  update(p: [..., rows, cols], g) {
    buf = lerp(buf, g, 1 - momentum)
    let u = where(nesterov, lerp(g, buf, momentum), buf)
    var x = u / max(norm(u), eps)
    with precision = ns_precision {
      if rows > cols {
        x = newton_schulz(x.T, ns_steps).T   // the smaller Gram matrix
      } else {
        x = newton_schulz(x, ns_steps)
      }
    }
    p = p * (1 - lr * weight_decay) - lr * sqrt(max(1, rows / cols)) * x
  }
}
