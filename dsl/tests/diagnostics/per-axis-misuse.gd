// expect: E0020 E0005 E0023 W0008
optimizer bad_axes {
  hyper lr = 0.1
  state acc: [axes] = zeros
  state mixed: [axes, rows] = zeros

  update(p, g) {
    let a = acc + g
    let b = axis_min(g)
    acc = axis_max(acc)
    p = p - lr * axis_min(acc) * g + 0 * a + 0 * b
  }
}

fn widest(x: [r]) -> [r] {
  return axis_max(x)
}
