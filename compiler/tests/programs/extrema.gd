// Largest and smallest elements, whole and along each axis, of values of both signs: a
// reduction that started from 0 (as `max_abs` does) instead of -infinity would be wrong on
// the negative rows. Used by the emulated GPU test and runtime/tests/extrema.rs.
optimizer extrema {
  hyper lr = 0.1

  state hi_rows: [rows] = zeros
  state lo_cols: [cols] = zeros
  state spread: [] = 0
  state top = zeros

  update(p: [rows, cols], g) {
    let shifted = g - 2
    hi_rows = max(shifted, axis = 1)
    lo_cols = min(g + 2, axis = 0)
    spread = max(shifted) - min(g)
    p = p - lr * (shifted / (1 + abs(hi_rows)) + g / lo_cols) - 0.001 * spread
  }

  update(p, g) {
    top = max(top - 1, g - 3)
    p = p - lr * (g - 2) / (1 + abs(max(g - 2))) + 0.01 * min(g * p)
  }
}
