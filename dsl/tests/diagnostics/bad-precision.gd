// expect: E0014 E0018 E0019
optimizer muon_like {
  hyper lr = 0.02
  hyper products = bf16
  hyper typed: f32 = tf32
  hyper ranged = f32 in 0..=1
  update(p: [rows, cols], g) {
    var x = g
    with precision = fp8 {
      x = x @ x.T @ x
    }
    with precision = lr {
      x = x @ x.T @ x
    }
    with accuracy = bf16 {
      x = x @ x.T @ x
    }
    with precision = products {
      x = x @ x.T @ x
    }
    p = p - lr * products * x
  }
}
