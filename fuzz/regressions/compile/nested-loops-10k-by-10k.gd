optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    var x = g
    for i in 0..10000 {
      for j in 0..10000 {
        x = 0.5 * x
      }
    }
    p = p - lr * x
  }
}
