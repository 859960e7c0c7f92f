//! Optional hyperparameters (`optional hyper max_norm = none`): while unset, the statements
//! under `if present(max_norm)` are skipped (here: clipping by the global norm), on the CPU and
//! the interpreter alike; set, they run; unset again, they stop. A hyperparameter that is not
//! optional cannot be unset, and setting NaN is still refused for it.

use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program, RuntimeError};

const SOURCE: &str = "
optimizer sgd_clip {
  hyper lr = 0.1
  optional hyper max_norm = none
  update(p, g) {
    var d = g
    if present(max_norm) {
      let norm = global_norm(g)
      d = where(norm < max_norm, g, g / norm * max_norm)
    }
    p = p - lr * d
  }
}
";

fn run(backend: Backend, max_norm: &[Option<f64>]) -> Vec<Vec<f32>> {
    let program = Program::compile(SOURCE).expect("compiles");
    let specs = [ParamSpec::new("w", &[7, 5]), ParamSpec::new("b", &[5])];
    let mut opt = Optimizer::with_options(&program, &specs, Options { backend, threads: Some(2) }).expect("binds");
    let mut params: Vec<Vec<f32>> = vec![vec![0.5; 35], vec![-0.25; 5]];
    let mut out = Vec::new();
    for (step, m) in max_norm.iter().enumerate() {
        match m {
            Some(v) => opt.set_hyper("max_norm", *v).expect("set"),
            None => opt.unset_hyper("max_norm").expect("unset"),
        }
        let grads: Vec<Vec<f32>> =
            [35usize, 5].iter().map(|&n| (0..n).map(|i| ((i * 7 + step * 3) % 11) as f32 - 5.0).collect()).collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
        out.push(params.concat());
    }
    out
}

#[test]
fn an_unset_optional_hyperparameter_skips_its_stage() {
    for backend in [Backend::Cpu, Backend::Interp] {
        let plain = run(backend, &[None, None, None]);
        // Unset: plain SGD, p - lr * g, exactly.
        let mut p: Vec<f32> = [vec![0.5f32; 35], vec![-0.25; 5]].concat();
        for (step, got) in plain.iter().enumerate() {
            let g: Vec<f32> = [35usize, 5]
                .iter()
                .flat_map(|&n| (0..n).map(move |i| ((i * 7 + step * 3) % 11) as f32 - 5.0))
                .collect();
            for (x, gi) in p.iter_mut().zip(&g) {
                *x -= 0.1f32 * gi;
            }
            // The CPU computes in float32 as this loop does; the interpreter in float64.
            let exact = got == &p;
            let near = got.iter().zip(&p).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0));
            assert!(exact || (backend == Backend::Interp && near), "{backend:?}: step {step} unset is plain SGD");
        }
        // Set on the middle step only: that step is clipped to norm 1, the others are not.
        let mixed = run(backend, &[None, Some(1.0), None]);
        assert_eq!(mixed[0], plain[0], "{backend:?}");
        let moved: f32 = mixed[1].iter().zip(&mixed[0]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
        assert!((moved - 0.1).abs() < 1e-5, "{backend:?}: a clipped step moves lr * max_norm, moved {moved}");
        let last: Vec<f32> = mixed[2].iter().zip(&mixed[1]).map(|(a, b)| a - b).collect();
        let plain_last: Vec<f32> = plain[2].iter().zip(&plain[1]).map(|(a, b)| a - b).collect();
        let close = last.iter().zip(&plain_last).all(|(a, b)| (a - b).abs() < 1e-5);
        assert!(close, "{backend:?}: unset again, the step is plain SGD's");
    }
}

#[test]
fn only_an_optional_hyperparameter_can_be_unset() {
    let program = Program::compile(SOURCE).expect("compiles");
    let mut opt = Optimizer::new(&program, &[ParamSpec::new("w", &[3])]).expect("binds");
    let e = opt.unset_hyper("lr").expect_err("lr is not optional");
    assert!(matches!(e, RuntimeError::Step(_)) && e.to_string().contains("not optional"), "{e}");
    assert!(opt.set_hyper("lr", f64::NAN).is_err(), "NaN is no value for a hyperparameter that must be set");
    assert_eq!(opt.hyper("lr"), Some(0.1));
    assert!(opt.hyper("max_norm").is_some_and(f64::is_nan), "unset by default");
    opt.set_hyper("max_norm", 2.0).expect("set");
    assert_eq!(opt.hyper("max_norm"), Some(2.0));
}
