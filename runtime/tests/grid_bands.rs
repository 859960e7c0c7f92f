//! Grid kernels (broadcast operands, sums along an axis) cut into bands of rows across the
//! worker threads: a matrix larger than one band steps as the reference interpreter does,
//! gives the same bits on 1 and 2 threads (bands and their combination order are fixed), and
//! an axis reduction under `every` is written only on its steps.

use gdc_runtime::verify::noise_f32;
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};
use std::path::PathBuf;

/// Row and column statistics along both axes, one of them refreshed every other step, a
/// column max-abs and a row vector and a column vector broadcast over the matrix.
const BANDED: &str = r#"
optimizer banded {
  hyper lr = 0.05
  state row_sq: [rows] = zeros
  state col_sq: [cols] = zeros
  state col_max: [cols] = zeros
  update(p: [rows, cols], g) {
    row_sq = row_sq + sum(g * g, axis = 1)
    every 2 {
      col_sq = col_sq + sum(g * g, axis = 0)
    }
    col_max = max(col_max, max_abs(g, axis = 0))
    let scale = rsqrt(row_sq * col_sq / (mean(row_sq) + 1) + 1e-8) / (col_max + 1)
    p = p - lr * g * scale
  }
}
"#;

fn options(backend: Backend, threads: usize) -> Options {
    Options { backend, threads: Some(threads) }
}

/// Steps `shape` for four steps; the parameter and every state after.
fn run(program: &Program, shape: &[usize], opts: Options, states: &[&str]) -> Vec<Vec<f32>> {
    let spec = ParamSpec::new("w", shape);
    let mut opt = Optimizer::with_options(program, std::slice::from_ref(&spec), opts).expect("binds");
    let n = spec.numel();
    let mut p = noise_f32(1, n);
    for step in 0..4u64 {
        let g = noise_f32(10 + step, n);
        opt.step(&mut [&mut p], &[&g]).expect("steps");
    }
    let mut out = vec![p];
    for s in states {
        out.push(opt.state("w", s).expect("a state"));
    }
    out
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs() / f64::from(y.abs()).max(1e-3))
        .fold(0.0, f64::max)
}

#[test]
fn banded_grid_kernels_match_the_interpreter_and_do_not_depend_on_threads() {
    let adafactor =
        Program::compile_file(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers/adafactor.gd"))
            .expect("adafactor compiles");
    let banded = Program::compile(BANDED).expect("compiles");
    let cases: [(&Program, &[&str]); 2] =
        [(&adafactor, &["row_var", "col_var"]), (&banded, &["row_sq", "col_sq", "col_max"])];
    // 2, 3 and 5 bands of 128K elements (one of a single row), and one band.
    for shape in [[700usize, 300], [513, 767], [5, 120_000], [37, 129]] {
        for (program, states) in cases {
            let two = run(program, &shape, options(Backend::Cpu, 2), states);
            let one = run(program, &shape, options(Backend::Cpu, 1), states);
            for (a, b) in two.iter().zip(&one) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{shape:?}: 1 and 2 threads differ");
            }
            let exact = run(program, &shape, options(Backend::Interp, 1), states);
            for (i, (a, b)) in two.iter().zip(&exact).enumerate() {
                let err = max_rel(a, b);
                assert!(err < 1e-5, "{shape:?}: buffer {i} differs from the interpreter by {err:e}");
            }
        }
    }
}

#[test]
fn an_axis_reduction_under_every_is_written_only_on_its_steps() {
    let banded = Program::compile(BANDED).expect("compiles");
    let shape = [700usize, 300];
    let spec = ParamSpec::new("w", &shape);
    let mut opt =
        Optimizer::with_options(&banded, std::slice::from_ref(&spec), options(Backend::Cpu, 2)).expect("binds");
    let mut p = noise_f32(1, spec.numel());
    let g = noise_f32(2, spec.numel());
    // Column sums along 700 rows, each of |g| < 1 squared: what step 1 writes.
    let mut want = vec![0.0f64; shape[1]];
    for (i, x) in g.iter().enumerate() {
        want[i % shape[1]] += f64::from(*x) * f64::from(*x);
    }
    opt.step(&mut [&mut p], &[&g]).expect("step 1");
    let after_one = opt.state("w", "col_sq").expect("col_sq");
    assert!(max_rel(&after_one, &want.iter().map(|x| *x as f32).collect::<Vec<_>>()) < 1e-6);
    // Step 2 is not a refresh step: the column sums stay as they were.
    opt.step(&mut [&mut p], &[&g]).expect("step 2");
    assert_eq!(opt.state("w", "col_sq").expect("col_sq"), after_one, "written on a step its guard did not hold");
    opt.step(&mut [&mut p], &[&g]).expect("step 3");
    let after_three = opt.state("w", "col_sq").expect("col_sq");
    assert!(after_three.iter().zip(&after_one).all(|(a, b)| a > b), "not written on step 3");
}
