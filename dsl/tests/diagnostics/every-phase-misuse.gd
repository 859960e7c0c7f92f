// expect: E0010
optimizer lookahead_like {
  hyper lr = 0.01
  hyper sync_period: int = 6
  hyper offset = 2.0
  state slow = zeros
  update(p, g) {
    p = p - lr * g
    every sync_period at 0 {
      slow = p
    }
    every sync_period at offset {
      slow = p
    }
  }
}
