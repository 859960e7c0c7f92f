//! Globals the update assigns (step-shared scalars, Prodigy's `d`): one value for the whole
//! optimizer, folded from every parameter's reductions, read at its old value before the
//! assignment and at its new one after it, stored once per step; the same on the CPU (any
//! number of threads) and the interpreter, saved in checkpoints, untouched by a refused or
//! skipped step; a policy cannot route to such an optimizer beside others.

use gdc_runtime::{Backend, NonFinite, Optimizer, Options, ParamSpec, Program};

/// Every parameter moves by this step's sum of all gradients, read as the difference of the
/// global before and after its assignment; `count` is a global computed on the host alone.
const PROBE: &str = "
optimizer probe {
  global total = 0
  global count = 0
  update(p, g) {
    let before = total
    total = total + global_sum(g)
    count = count + 1
    p = p + (total - before)
  }
}
";

const SHAPES: [&[usize]; 3] = [&[7, 5], &[5], &[2, 3, 4]];

fn specs() -> Vec<ParamSpec> {
    ["w", "b", "t"].into_iter().zip(SHAPES).map(|(n, s)| ParamSpec::new(n, s)).collect()
}

fn grads(step: usize) -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let n: usize = s.iter().product();
            (0..n).map(|i| (((i * 13 + k * 5 + step * 7) % 17) as f32 - 8.0) * 0.125).collect()
        })
        .collect()
}

fn initial() -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            (0..n).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect()
        })
        .collect()
}

fn step(opt: &mut Optimizer, params: &mut [Vec<f32>], step: usize) {
    let g = grads(step);
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gviews: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
    opt.step(&mut views, &gviews).expect("steps");
}

fn optimizer(program: &Program, backend: Backend, threads: usize) -> Optimizer {
    Optimizer::with_options(program, &specs(), Options { backend, threads: Some(threads) }).expect("binds")
}

#[test]
fn a_global_assigned_in_update_is_the_fold_over_every_parameter() {
    let program = Program::compile(PROBE).expect("compiles");
    for (backend, threads) in [(Backend::Cpu, 1), (Backend::Cpu, 2), (Backend::Interp, 1)] {
        let mut opt = optimizer(&program, backend, threads);
        let mut params = initial();
        let mut total = 0.0f64;
        for s in 0..4 {
            let before = params.clone();
            step(&mut opt, &mut params, s);
            let sum: f64 = grads(s).iter().flatten().map(|&x| f64::from(x)).sum();
            total += sum;
            // Every parameter, whichever ran first, read the old value before the assignment
            // and the new one after it: each moved by this step's sum over all of them.
            for (p, b) in params.iter().flatten().zip(before.iter().flatten()) {
                let want = (f64::from(*b) + sum) as f32;
                assert!((p - want).abs() <= 1e-6 * want.abs().max(1.0), "{backend:?}/{threads}: {p} != {want}");
            }
            assert_eq!(opt.global("total"), Some(total), "{backend:?}/{threads}: step {s}");
            assert_eq!(opt.global("count"), Some((s + 1) as f64), "{backend:?}/{threads}: once per step");
        }
        assert_eq!(opt.global("nothing"), None);
    }
}

fn prodigy() -> Program {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/prodigy.gd");
    Program::compile_file(path).expect("prodigy.gd compiles")
}

/// One step of a noisy quadratic pulling every element towards 2 (so Prodigy's `d` grows).
fn quadratic_step(opt: &mut Optimizer, params: &mut [Vec<f32>], step: usize) {
    let g: Vec<Vec<f32>> = params
        .iter()
        .zip(grads(step))
        .map(|(p, noise)| p.iter().zip(noise).map(|(x, n)| x - 2.0 + 0.05 * n).collect())
        .collect();
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gviews: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
    opt.step(&mut views, &gviews).expect("steps");
}

/// Prodigy's parameters and `d` after `steps` steps.
fn run_prodigy(program: &Program, backend: Backend, threads: usize, steps: usize) -> (Vec<Vec<f32>>, f64) {
    let mut opt = optimizer(program, backend, threads);
    opt.set_hyper("estim_lr0", 1e-2).expect("set");
    let mut params = initial();
    for s in 0..steps {
        quadratic_step(&mut opt, &mut params, s);
    }
    (params, opt.global("d").expect("d"))
}

#[test]
fn prodigys_step_size_is_the_same_on_every_backend_and_thread_count() {
    let program = prodigy();
    let (p1, d1) = run_prodigy(&program, Backend::Cpu, 1, 8);
    let (p2, d2) = run_prodigy(&program, Backend::Cpu, 2, 8);
    assert_eq!(p1, p2, "the CPU's result does not depend on its threads");
    assert_eq!(d1.to_bits(), d2.to_bits());
    assert!(d1 > 1e-2 * 3.0, "d grew from estim_lr0: {d1}");
    let (pi, di) = run_prodigy(&program, Backend::Interp, 1, 8);
    assert!((di - d1).abs() <= 1e-4 * d1, "interpreter d {di}, CPU d {d1}");
    for (a, b) in pi.iter().flatten().zip(p1.iter().flatten()) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "interpreter {a}, CPU {b}");
    }
}

#[test]
fn prodigys_step_size_is_checkpointed() {
    let program = prodigy();
    let (want, d_want) = run_prodigy(&program, Backend::Cpu, 2, 6);
    let path = std::env::temp_dir().join(format!("gdc-step-globals-{}.safetensors", std::process::id()));
    let mut opt = optimizer(&program, Backend::Cpu, 2);
    opt.set_hyper("estim_lr0", 1e-2).expect("set");
    let mut params = initial();
    for s in 0..3 {
        quadratic_step(&mut opt, &mut params, s);
    }
    let d_saved = opt.global("d").expect("d");
    opt.save_checkpoint(&path).expect("saves");
    let mut resumed = optimizer(&program, Backend::Cpu, 2);
    resumed.load_checkpoint(&path).expect("loads");
    let _ = std::fs::remove_file(&path);
    assert_eq!(resumed.global("d"), Some(d_saved), "d comes back from the checkpoint");
    for s in 3..6 {
        quadratic_step(&mut resumed, &mut params, s);
    }
    assert_eq!(params, want, "resumed from the checkpoint = run through");
    assert_eq!(resumed.global("d").map(f64::to_bits), Some(d_want.to_bits()));
}

#[test]
fn a_refused_or_skipped_step_leaves_the_globals_alone() {
    let program = Program::compile(PROBE).expect("compiles");
    for backend in [Backend::Cpu, Backend::Interp] {
        let mut opt = optimizer(&program, backend, 2);
        let mut params = initial();
        step(&mut opt, &mut params, 0);
        let (total, count) = (opt.global("total"), opt.global("count"));
        // A gradient of the wrong length: refused before anything changes.
        let mut g = grads(1);
        g[1].pop();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        assert!(opt.step(&mut views, &gviews).is_err(), "{backend:?}: a short gradient is refused");
        assert_eq!((opt.global("total"), opt.global("count")), (total, count), "{backend:?}");
        if backend == Backend::Cpu {
            // A NaN in a gradient under NonFinite::SkipStep: the step is skipped whole.
            opt.set_non_finite(NonFinite::SkipStep);
            let mut g = grads(1);
            g[2][3] = f32::NAN;
            let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
            let gviews: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
            opt.step(&mut views, &gviews).expect("skipped, not an error");
            assert_eq!(opt.skipped_steps(), 1);
            assert_eq!((opt.global("total"), opt.global("count")), (total, count));
        }
    }
}

#[test]
fn a_policy_cannot_route_to_an_optimizer_that_assigns_globals_beside_others() {
    let dir = std::env::temp_dir().join(format!("gdc-step-globals-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers");
    for f in ["muon.gd", "prodigy.gd"] {
        std::fs::copy(std::path::Path::new(examples).join(f), dir.join(f)).expect("copy");
    }
    let policy = "use \"muon.gd\"\nuse \"prodigy.gd\"\npolicy p {\n  hidden [rows, cols] -> muon\n  _ -> prodigy\n}\n";
    std::fs::write(dir.join("p.gd"), policy).expect("write");
    let err = Program::compile_file(dir.join("p.gd")).err().expect("refused");
    let _ = std::fs::remove_dir_all(&dir);
    let text = err.to_string();
    assert!(text.contains("E0025") && text.contains("assigns global `numerator`"), "{text}");
}
