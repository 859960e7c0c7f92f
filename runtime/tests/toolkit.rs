//! The training toolkit through the runtime: global reductions fold over every parameter
//! (across the CPU engine's chunks and parameters alike), roles and base shapes reach the
//! update, policies route by role, and an EMA of the weights can be swapped in and out.

use gdc_runtime::{Backend, InterpError, Optimizer, Options, ParamSpec, Program, Role, RuntimeError};

fn options(backend: Backend) -> Options {
    Options { backend, threads: Some(2) }
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// Every element becomes the global norm of the gradients (the parameter is replaced):
/// the fold must see all three parameters, one of them longer than a CPU chunk.
#[test]
fn global_norm_folds_every_parameter() {
    let src = "optimizer gn { update(p, g) { p = 0 * p + global_norm(g) + global_max_abs(g) / 1000 } }";
    let program = Program::compile(src).expect("compiles");
    let shapes: [&[usize]; 3] = [&[7, 5], &[300_000], &[3]];
    let grads: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, s)| values(s.iter().product(), i as u32)).collect();
    let norm = grads.iter().flatten().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let max_abs = grads.iter().flatten().fold(0.0f64, |a, x| a.max(f64::from(x.abs())));
    let want = norm + max_abs / 1000.0;
    for backend in [Backend::Interp, Backend::Cpu] {
        let specs: Vec<ParamSpec> =
            shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("p{i}"), s)).collect();
        let mut opt = Optimizer::with_options(&program, &specs, options(backend)).expect("binds");
        let mut params: Vec<Vec<f32>> = grads.iter().map(|g| vec![0.5; g.len()]).collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
        for p in &params {
            for x in p {
                assert!((f64::from(*x) - want).abs() <= 1e-5 * want, "{backend:?}: {x} != {want}");
            }
        }
    }
}

/// `has_role` masks weight decay; `width_mult` and `inf_dims` come from the base shape.
#[test]
fn roles_and_base_shapes_reach_the_update() {
    let src = "optimizer r { update(p, g) { p = where(has_role(bias, norm), 0, 1) + 10 * inf_dims + 100 * width_mult + 0 * p + 0 * g } }";
    let program = Program::compile(src).expect("compiles");
    let specs = [
        ParamSpec::new("w", &[8, 6]).with_role(Role::Hidden).with_base_shape(&[4, 3]),
        ParamSpec::new("b", &[8]).with_role(Role::Bias).with_base_shape(&[4]),
        ParamSpec::new("n", &[8]).with_role(Role::Norm),
        ParamSpec::new("e", &[8, 6]).with_role(Role::Embedding).with_base_shape(&[8, 3]),
    ];
    // (w) hidden, two dimensions grew, fan-in 6/3; (b) bias, one grew, 8/4; (n) no base
    // shape; (e) one dimension grew, fan-in 6/3.
    let want = [1.0 + 20.0 + 200.0, 10.0 + 200.0, 100.0, 1.0 + 10.0 + 200.0];
    for backend in [Backend::Interp, Backend::Cpu] {
        let mut opt = Optimizer::with_options(&program, &specs, options(backend)).expect("binds");
        let mut params: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.0; s.numel()]).collect();
        let grads: Vec<Vec<f32>> = params.clone();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
        for ((p, w), s) in params.iter().zip(want).zip(&specs) {
            assert!(p.iter().all(|x| *x == w as f32), "{backend:?} {}: {:?} != {w}", s.name, &p[..2]);
        }
    }
    let bad = ParamSpec::new("w", &[8, 6]).with_base_shape(&[4]);
    let err = Optimizer::with_options(&program, &[bad], options(Backend::Cpu)).err().expect("refused");
    assert!(matches!(err, RuntimeError::Step(InterpError::BaseShape { .. })), "{err}");
}

/// The muon_adamw policy: hidden matrices get Muon's state, the rest AdamW's; a parameter
/// no route takes is refused by name.
#[test]
fn policy_routes_by_role_and_rank() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/muon_adamw.gd");
    let program = Program::compile_file(root).expect("the policy compiles");
    let names: Vec<String> = program.plan().module.hypers.iter().map(|h| h.name.clone()).collect();
    assert!(names.contains(&"muon.lr".to_string()) && names.contains(&"adamw.lr".to_string()), "{names:?}");
    let specs = [
        ParamSpec::new("w", &[6, 9]).with_role(Role::Hidden),
        ParamSpec::new("e", &[11, 6]).with_role(Role::Embedding),
        ParamSpec::new("b", &[6]).with_role(Role::Hidden),
    ];
    let mut opt = Optimizer::with_options(&program, &specs, options(Backend::Cpu)).expect("binds");
    let mut params: Vec<Vec<f32>> = specs.iter().map(|s| values(s.numel(), 1)).collect();
    let grads: Vec<Vec<f32>> = specs.iter().map(|s| values(s.numel(), 2)).collect();
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    opt.step(&mut views, &gviews).expect("steps");
    assert!(opt.state("w", "muon.buf").is_some(), "w is Muon's");
    assert!(opt.state("w", "adamw.m").is_none(), "w has no AdamW state");
    assert!(opt.state("e", "adamw.m").is_some() && opt.state("b", "adamw.m").is_some(), "the rest is AdamW's");
    // A policy without a catch-all refuses what it does not route.
    let dir = std::env::temp_dir().join(format!("gdc-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for f in ["muon.gd", "adamw.gd"] {
        std::fs::copy(std::path::Path::new(root).with_file_name(f), dir.join(f)).expect("copy");
    }
    std::fs::write(dir.join("p.gd"), "use \"muon.gd\"\npolicy only_hidden {\n  hidden [rows, cols] -> muon\n}\n")
        .expect("write");
    let only = Program::compile_file(dir.join("p.gd")).expect("compiles");
    let err =
        Optimizer::with_options(&only, &[ParamSpec::new("b", &[6])], options(Backend::Cpu)).err().expect("refused");
    assert!(err.to_string().contains("routes no optimizer to parameter `b`"), "{err}");
    // Global clipping inside one of several routed optimizers would see only its parameters.
    // (adamw_clip_cosine.gd is composed from ../parts/transforms.gd: used where it is.)
    let clip = std::path::Path::new(root).with_file_name("adamw_clip_cosine.gd");
    std::fs::write(
        dir.join("q.gd"),
        format!(
            "use \"muon.gd\"\nuse \"{}\"\npolicy q {{\n  hidden [rows, cols] -> muon\n  _ -> adamw_clip_cosine\n}}\n",
            clip.display()
        ),
    )
    .expect("write");
    let Err(err) = Program::compile_file(dir.join("q.gd")) else { panic!("a policy cannot clip per optimizer") };
    assert!(err.to_string().contains("E0025"), "{err}");
}

/// An EMA of the weights: swapped into the parameters for evaluation and back, bit for bit.
#[test]
fn ema_swaps_in_and_out() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/adamw_ema.gd");
    let program = Program::compile_file(path).expect("compiles");
    let specs = [ParamSpec::new("w", &[7, 5]), ParamSpec::new("b", &[5])];
    let mut opt = Optimizer::with_options(&program, &specs, options(Backend::Cpu)).expect("binds");
    opt.set_hyper("ema_decay", 0.5).expect("known");
    let mut params: Vec<Vec<f32>> = specs.iter().map(|s| values(s.numel(), 3)).collect();
    {
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let err = opt.swap_state("ema", &mut views).expect_err("nothing to swap yet");
        assert!(matches!(err, RuntimeError::SwapState { .. }), "{err}");
    }
    for seed in 0..3 {
        let grads: Vec<Vec<f32>> = specs.iter().map(|s| values(s.numel(), 10 + seed)).collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
    }
    let trained = params.clone();
    let ema: Vec<Vec<f32>> = ["w", "b"].iter().map(|n| opt.state(n, "ema").expect("ema")).collect();
    assert_ne!(ema, trained, "the average lags the weights");
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    opt.swap_state("ema", &mut views).expect("swaps in");
    assert_eq!(params, ema, "the parameters hold the average");
    assert_eq!(opt.state("w", "ema").expect("ema"), trained[0], "the state holds the weights");
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    opt.swap_state("ema", &mut views).expect("swaps back");
    assert_eq!(params, trained, "swapping twice restores the weights");
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let err = opt.swap_state("m2", &mut views).expect_err("unknown state");
    assert!(err.to_string().contains("no such state"), "{err}");
}
