//! The language's constructs run on the interpreter and give the values worked out by hand:
//! scalar state, `every`, `if`/`else` around matrix work, ranged loops, functions, `prepare`
//! with globals, broadcasting, axis reductions, `eye`.

use gdc_compiler::interp::Interpreter;

fn bind(src: &str, params: &[(&str, &[usize])]) -> Interpreter {
    let c = gdc_compiler::compile(src).unwrap_or_else(|e| match e {
        gdc_compiler::CompileError::Source(d) => panic!("{}", gdc_dsl::render(&d, "test.gd", src)),
        other => panic!("{other}"),
    });
    let ps: Vec<(String, Vec<usize>)> = params.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect();
    Interpreter::new(c.plan, &ps).expect("binds")
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + y.abs()))
}

#[test]
fn scalar_state_and_every() {
    let src = "optimizer t {
      hyper lr = 0.5
      hyper k: int = 2
      state count: [] = 0
      state acc = zeros
      update(p, g) {
        count = count + 1
        every k { acc = acc + g }
        p = p - lr * count * acc
      }
    }";
    let mut it = bind(src, &[("w", &[1])]);
    let mut p = vec![vec![0.0]];
    let mut seen = Vec::new();
    for _ in 0..4 {
        it.step(&mut p, &[vec![1.0]]).expect("steps");
        seen.push(p[0][0]);
    }
    // every 2 runs on steps 1 and 3: acc = 1, 1, 2, 2; count = 1..4.
    assert_eq!(seen, vec![-0.5, -1.5, -4.5, -8.5]);
    assert_eq!(it.state(0, "count").map(|t| t.data.clone()), Some(vec![4.0]));
}

/// `every K at P` runs on steps P, P+K, P+2K, ...: never before P, whatever the remainder of a
/// negative `step - P`; with P = K (Lookahead's sync) on K, 2K, ...
#[test]
fn every_with_a_phase() {
    let src = "optimizer t {
      hyper k: int = 3
      hyper first: int = 5
      state sync: [] = 0
      state late: [] = 0
      state plain: [] = 0
      update(p, g) {
        every k at k { sync = sync + step }
        every 2 at first { late = late + step }
        every k { plain = plain + step }
      }
    }";
    let mut it = bind(src, &[("w", &[1])]);
    let mut p = vec![vec![0.0]];
    for _ in 0..10 {
        it.step(&mut p, &[vec![1.0]]).expect("steps");
    }
    let get = |it: &Interpreter, name: &str| it.state(0, name).map(|t| t.data[0]);
    assert_eq!(get(&it, "sync"), Some((3 + 6 + 9) as f64), "steps 3, 6, 9");
    assert_eq!(get(&it, "late"), Some((5 + 7 + 9) as f64), "steps 5, 7, 9 (not 1 or 3)");
    assert_eq!(get(&it, "plain"), Some((1 + 4 + 7 + 10) as f64), "steps 1, 4, 7, 10");
}

/// `max(x)`, `min(x)` and their axis forms on negative values (where a start from 0, as
/// `max_abs` has, would be wrong), as SM3 keeps its accumulators.
#[test]
fn max_and_min_reductions() {
    let src = "optimizer t {
      state row_max: [rows] = zeros
      state col_min: [cols] = zeros
      state both: [] = 0
      update(p: [rows, cols], g) {
        row_max = max(g, axis = 1)
        col_min = min(g, axis = 0)
        both = max(g) - min(g)
      }
    }";
    // g = [[-3, -1, -2], [-5, -4, -6]]
    let mut it = bind(src, &[("w", &[2, 3])]);
    let mut p = vec![vec![0.0; 6]];
    it.step(&mut p, &[vec![-3.0, -1.0, -2.0, -5.0, -4.0, -6.0]]).expect("steps");
    assert_eq!(it.state(0, "row_max").map(|t| t.data.clone()), Some(vec![-1.0, -4.0]));
    assert_eq!(it.state(0, "col_min").map(|t| t.data.clone()), Some(vec![-5.0, -4.0, -6.0]));
    assert_eq!(it.state(0, "both").map(|t| t.data.clone()), Some(vec![-1.0 - -6.0]));
}

#[test]
fn matrix_state_eye_axis_sums_and_broadcasting() {
    let src = "optimizer t {
      state L: [rows, rows] = 2 * eye
      state r: [rows] = 1
      state c: [cols] = zeros
      update(p: [rows, cols], g) {
        L = L + g @ g.T
        r = r + sum(g, axis = 1)
        c = c + mean(g, axis = 0)
        p = (L @ p) + r * c
      }
    }";
    // p = [[1, 2, 3], [4, 5, 6]], g = [[1, 0, 1], [0, 2, 0]]
    let mut it = bind(src, &[("w", &[2, 3])]);
    let mut p = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]];
    it.step(&mut p, &[vec![1.0, 0.0, 1.0, 0.0, 2.0, 0.0]]).expect("steps");
    // L = 2I + g g^T = [[4, 0], [0, 6]]; r = 1 + [2, 2] = [3, 3]; c = [0.5, 1, 0.5]
    // L @ p = [[4, 8, 12], [24, 30, 36]]; r * c = [[1.5, 3, 1.5], [1.5, 3, 1.5]]
    assert_eq!(p[0], vec![5.5, 11.0, 13.5, 25.5, 33.0, 37.5]);
    assert_eq!(it.state(0, "L").map(|t| t.data.clone()), Some(vec![4.0, 0.0, 0.0, 6.0]));
}

#[test]
fn if_else_around_matrix_work_ranged_loops_and_functions() {
    let src = "
    fn double(x: tensor) -> tensor { return 2 * x }
    fn gram(x: [a, b]) -> [a, a] { return x @ x.T }
    optimizer t {
      hyper n: int = 1 in 0..=4
      update(p: [rows, cols], g) {
        var x = g
        for i in 0..n { x = double(x) }
        if rows > cols {
          p = p - x
        } else {
          p = p - gram(x) @ p
        }
      }
    }";
    // 1x2 (wide): p = p - (x x^T) p with x = 2^n g.
    let mut it = bind(src, &[("w", &[1, 2])]);
    it.set_hyper("n", 3.0).expect("in range");
    let mut p = vec![vec![1.0, 1.0]];
    it.step(&mut p, &[vec![0.25, 0.0]]).expect("steps");
    // x = [2, 0], x x^T = 4, p = [1 - 4, 1 - 4]
    assert_eq!(p[0], vec![-3.0, -3.0]);
    // 2x1 (tall): p = p - x.
    let mut it = bind(src, &[("w", &[2, 1])]);
    let mut p = vec![vec![1.0, 1.0]];
    it.step(&mut p, &[vec![0.25, 0.5]]).expect("steps");
    assert_eq!(p[0], vec![0.5, 0.0]);
    assert!(it.set_hyper("n", 5.0).is_err(), "outside the declared range");
}

#[test]
fn prepare_and_globals_carry_across_steps() {
    let src = "optimizer t {
      hyper lr = 1.0
      global total = 0
      prepare {
        total = total + step
        let scale = lr / total
      }
      update(p, g) { p = p - scale * g }
    }";
    let mut it = bind(src, &[("a", &[2]), ("b", &[1])]);
    let mut p = vec![vec![0.0, 0.0], vec![0.0]];
    let g = vec![vec![1.0, 2.0], vec![3.0]];
    it.step(&mut p, &g).expect("steps"); // total 1
    it.step(&mut p, &g).expect("steps"); // total 3
    let third = 1.0 + 1.0 / 3.0;
    assert!(close(&p[0], &[-third, -2.0 * third]) && close(&p[1], &[-3.0 * third]), "{p:?}");
    assert_eq!(it.globals, vec![3.0], "updated once per step, not once per parameter");
}

#[test]
fn where_min_max_clamp_sign_and_reductions() {
    let src = "optimizer t {
      update(p, g) {
        let a = where(g > 0, sqrt(g), -1)
        let b = clamp(g, -1, 1) + sign(g) + abs(g) * max_abs(g)
        p = a + b + dot(g, g) + norm(g) + max(g, 0) + min(g, 0) + exp(0 * g) + log(1 + 0 * g) + rsqrt(4 + 0 * g)
      }
    }";
    let mut it = bind(src, &[("w", &[2])]);
    let mut p = vec![vec![0.0, 0.0]];
    it.step(&mut p, &[vec![4.0, -3.0]]).expect("steps");
    // g = [4, -3]: a = [2, -1]; b = [1 + 1 + 16, -1 - 1 + 12]; dot 25; norm 5; max [4, 0];
    // min [0, -3]; exp 1; log 0; rsqrt 0.5.
    assert_eq!(
        p[0],
        vec![2.0 + 18.0 + 25.0 + 5.0 + 4.0 + 0.0 + 1.0 + 0.5, -1.0 + 10.0 + 25.0 + 5.0 + 0.0 - 3.0 + 1.0 + 0.5]
    );
}

#[test]
fn an_int_function_parameter_bounds_a_loop() {
    let src = "
    fn halve(x: tensor, n: int) -> tensor {
      var y = x
      for i in 0..n { y = 0.5 * y }
      return y
    }
    fn twice(x: tensor, k: int) -> tensor { return halve(halve(x, k), k) }
    optimizer t {
      hyper n: int = 1 in 0..=3
      update(p, g) { p = halve(g, 2) + twice(g, n) }
    }";
    let mut it = bind(src, &[("w", &[1])]);
    it.set_hyper("n", 3.0).expect("in range");
    let mut p = vec![vec![0.0]];
    it.step(&mut p, &[vec![64.0]]).expect("steps");
    assert_eq!(p[0], vec![16.0 + 1.0]);
}

#[test]
fn outer_and_inv_root_on_vectors_and_matrices() {
    // A vector update: L = outer(g, g) + diag-free part, p = inv_root(L + I, 2) @ g.
    let src = "optimizer t {
      state L: [rows, rows] = eye
      update(p: [rows], g) {
        L = L + outer(g, g)
        p = inv_root(L, 2) @ g
      }
    }";
    let mut it = bind(src, &[("b", &[2])]);
    let mut p = vec![vec![0.0, 0.0]];
    it.step(&mut p, &[vec![3.0, 4.0]]).expect("steps");
    // L = I + g g^T has eigenvalue 26 along g and 1 across: L^(-1/2) g = g / sqrt(26).
    let s = 26f64.sqrt();
    assert!(close(&p[0], &[3.0 / s, 4.0 / s]), "{p:?}");
    assert_eq!(it.state(0, "L").map(|t| t.data.clone()), Some(vec![10.0, 12.0, 12.0, 17.0]));

    // A rotated matrix Q diag(4, 9) Q^T: its inverse square root is Q diag(1/2, 1/3) Q^T.
    let src = "optimizer t {
      state out: [rows, rows] = zeros
      update(p: [rows, cols], g) { out = inv_root(g @ g.T, 4) }
    }";
    let (c, s) = (0.6f64, 0.8f64); // a rotation by atan(4/3)
                                   // g = Q diag(2, 3) Q^T, so g g^T = Q diag(4, 9) Q^T and (g g^T)^(-1/4) = Q diag(1/sqrt 2, 1/sqrt 3) Q^T.
    let q = |a: f64, b: f64| vec![c * c * a + s * s * b, c * s * (a - b), c * s * (a - b), s * s * a + c * c * b];
    let mut it = bind(src, &[("w", &[2, 2])]);
    let mut p = vec![vec![0.0; 4]];
    it.step(&mut p, &[q(2.0, 3.0)]).expect("steps");
    let want = q(1.0 / 2f64.sqrt(), 1.0 / 3f64.sqrt());
    let p = [it.state(0, "out").expect("state").data.clone()];
    assert!(p[0].iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{:?} vs {want:?}", p[0]);

    // A singular matrix: the zero eigenvalue gives 0, not infinity.
    let mut it = bind(src, &[("w", &[2, 2])]);
    let mut p = vec![vec![0.0; 4]];
    it.step(&mut p, &[q(2.0, 0.0)]).expect("steps");
    let want = q(1.0 / 2f64.sqrt(), 0.0);
    let p = [it.state(0, "out").expect("state").data.clone()];
    assert!(p[0].iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12 && a.is_finite()), "{:?} vs {want:?}", p[0]);
}

#[test]
fn eigvecs_eigvals_qr_and_sort_perm() {
    let src = "optimizer t {
      state vals: [rows] = zeros
      state vecs: [rows, rows] = zeros
      state q: [rows, cols] = zeros
      state perm: [cols, cols] = zeros
      update(p: [rows, cols], g) {
        let s = g @ g.T
        vals = eigvals(s)
        vecs = eigvecs(s)
        q = qr(g)
        perm = sort_perm(sum(g, axis = 0))
      }
    }";
    // g = [[3, 0], [4, 5], [0, 0]]: g g^T = [[9, 12, 0], [12, 41, 20], [0, 20, 25]]... use the
    // decompositions' defining properties rather than hand-made digits.
    let g = vec![3.0, 0.0, 4.0, 5.0, 0.0, 0.0];
    let mut it = bind(src, &[("w", &[3, 2])]);
    let mut p = vec![vec![0.0; 6]];
    it.step(&mut p, std::slice::from_ref(&g)).expect("steps");
    let state = |n: &str| it.state(0, n).expect("state").data.clone();
    let (vals, vecs, q, perm) = (state("vals"), state("vecs"), state("q"), state("perm"));
    // s = g g^T has rank 2: eigenvalues ascending, the first (numerically) zero.
    assert!(vals[0].abs() < 1e-9 && vals[0] <= vals[1] && vals[1] <= vals[2], "{vals:?}");
    let s = |i: usize, j: usize| (0..2).map(|k| g[i * 2 + k] * g[j * 2 + k]).sum::<f64>();
    for e in 0..3 {
        for i in 0..3 {
            let sv: f64 = (0..3).map(|j| s(i, j) * vecs[j * 3 + e]).sum();
            assert!((sv - vals[e] * vecs[i * 3 + e]).abs() < 1e-9, "S v = lambda v for pair {e}");
        }
    }
    // qr(g): orthonormal columns, and R = Q^T g upper triangular with a non-negative diagonal.
    let dot = |a: usize, b: usize| (0..3).map(|i| q[i * 2 + a] * q[i * 2 + b]).sum::<f64>();
    assert!((dot(0, 0) - 1.0).abs() < 1e-12 && (dot(1, 1) - 1.0).abs() < 1e-12 && dot(0, 1).abs() < 1e-12);
    let r = |a: usize, b: usize| (0..3).map(|i| q[i * 2 + a] * g[i * 2 + b]).sum::<f64>();
    assert!(
        r(1, 0).abs() < 1e-12 && r(0, 0) > 0.0 && r(1, 1) > 0.0,
        "R = [[{}, {}], [{}, {}]]",
        r(0, 0),
        r(0, 1),
        r(1, 0),
        r(1, 1)
    );
    assert!((r(0, 0) - 5.0).abs() < 1e-12, "the first column of g has norm 5");
    // Column sums of g are [7, 5]: already descending, so the identity.
    assert_eq!(perm, vec![1.0, 0.0, 0.0, 1.0]);
    let mut it = bind(src, &[("w", &[3, 2])]);
    let mut p = vec![vec![0.0; 6]];
    it.step(&mut p, &[vec![0.0, 1.0, 0.0, 2.0, 0.0, 3.0]]).expect("steps");
    assert_eq!(it.state(0, "perm").expect("perm").data, vec![0.0, 1.0, 1.0, 0.0], "[0, 6] sorts to [6, 0]");
}

#[test]
fn an_old_state_value_read_after_the_state_is_overwritten() {
    // `old` is needed after a reduction of the new `m`, so after `m`'s buffer is rewritten.
    let src = "optimizer t {
      state m = zeros
      update(p, g) {
        let old = m
        m = m + g
        p = p - old * norm(m)
      }
    }";
    let mut it = bind(src, &[("w", &[2])]);
    let mut p = vec![vec![1.0, 1.0]];
    it.step(&mut p, &[vec![3.0, 4.0]]).expect("steps");
    assert_eq!(p[0], vec![1.0, 1.0], "old m is zero at the first step");
    it.step(&mut p, &[vec![3.0, 4.0]]).expect("steps");
    assert_eq!(p[0], vec![1.0 - 30.0, 1.0 - 40.0], "old m = [3, 4], |new m| = 10");
}

#[test]
fn bools_compare_with_equality() {
    let src = "optimizer t {
      hyper a = true
      hyper b = false
      update(p, g) { p = where(a == b, 1, 0) + where(a != b, 10, 0) + where(g > 0 == (g > 1), 100, 0) }
    }";
    let mut it = bind(src, &[("w", &[2])]);
    let mut p = vec![vec![0.0, 0.0]];
    it.step(&mut p, &[vec![0.5, 2.0]]).expect("steps");
    assert_eq!(p[0], vec![10.0, 110.0]);
}
