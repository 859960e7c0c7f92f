// expect: E0017
// A file compiles its last optimizer; an earlier one it does not use as a part is a mistake.
optimizer scale_by_sign {
  update(p, u) {
    return sign(u)
  }
}

optimizer unused {
  update(p, g) {
    p = p - g
  }
}

optimizer signsgd {
  hyper lr = 0.01
  part scale_by_sign
  update(p, g) {
    p = p - lr * scale_by_sign(p, g)
  }
}
