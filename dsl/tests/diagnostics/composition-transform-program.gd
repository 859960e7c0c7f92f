// expect: E0029
// A transformation gives a direction; on its own it steps no parameter.
optimizer scale_by_sign {
  update(p, u) {
    return sign(u)
  }
}
