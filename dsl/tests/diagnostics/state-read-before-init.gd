// expect: E0007
// State without an initialiser must be assigned on every path before it is read: an `if`
// without `else`, an `every` and a loop bounded by a hyperparameter may skip the assignment.
optimizer lookahead {
  hyper lr = 0.01
  hyper k: int = 1 in 0..=4
  state slow
  state fast
  state mid
  update(p, g) {
    if step > 1 {
      slow = p
    }
    every 5 {
      fast = g
    }
    for i in 0..k {
      mid = g
    }
    p = p - lr * g + 0.5 * (slow - p) + fast + mid
  }
}
