// expect: E0020
// bf16 storage is for tensors: a scalar state costs four bytes whatever its type.
optimizer scaled {
  hyper lr = 0.01

  state scale: bf16 [] = 1
  state m: bf16 = zeros

  update(p, g) {
    m = lerp(m, g, 0.1)
    scale = 0.99 * scale
    p = p - lr * scale * m
  }
}
