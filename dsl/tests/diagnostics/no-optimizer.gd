// expect: E0017
fn helper(x: f32) -> f32 {
  return x
}
