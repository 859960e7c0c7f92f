// expect: E0017
optimizer empty {
  hyper lr = 0.01
}
