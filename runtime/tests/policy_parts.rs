//! A policy's parts in front of every route (`part clip_grad_norm` in a `policy`): the clip's
//! norm spans every parameter of every routed optimizer, on the CPU (any number of threads)
//! and the interpreter alike; its hyperparameter is the policy's own (`max_norm`).

use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program, Role};
use std::path::PathBuf;

fn program() -> Program {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers/muon_adamw_clip.gd");
    Program::compile_file(path).expect("muon_adamw_clip compiles")
}

/// A hidden matrix (Muon), an embedding and a bias (AdamW).
fn specs() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("w", &[6, 9]).with_role(Role::Hidden),
        ParamSpec::new("e", &[11, 6]).with_role(Role::Embedding),
        ParamSpec::new("b", &[6]).with_role(Role::Bias),
    ]
}

fn noise(seed: usize, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((((i * 37 + seed * 11) % 23) as f32) - 11.0) / 11.0 * scale).collect()
}

/// Gradients whose joint norm is about `scale` times their elements' count's root, the
/// Muon-routed one larger than the others, so each route's own norm differs from the joint one.
fn grads(seed: usize, scale: f32) -> Vec<Vec<f32>> {
    specs()
        .iter()
        .enumerate()
        .map(|(i, s)| noise(seed + i, s.numel(), if i == 0 { 1.5 * scale } else { scale }))
        .collect()
}

fn step(opt: &mut Optimizer, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gviews: Vec<&[f32]> = grads.iter().map(|x| x.as_slice()).collect();
    opt.step(&mut views, &gviews).expect("steps");
}

fn norm(xs: &[Vec<f32>]) -> f64 {
    xs.iter().flatten().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

#[test]
fn the_clip_of_a_policy_spans_every_route() {
    let program = program();
    for (backend, threads) in [(Backend::Cpu, 1), (Backend::Cpu, 2), (Backend::Interp, 1)] {
        for scale in [0.01f32, 1.0] {
            let mut opt = Optimizer::with_options(&program, &specs(), Options { backend, threads: Some(threads) })
                .expect("binds");
            opt.set_hyper("max_norm", 2.0).expect("the clip's hyperparameter is the policy's own");
            let mut params: Vec<Vec<f32>> =
                specs().iter().enumerate().map(|(i, s)| noise(50 + i, s.numel(), 0.5)).collect();
            let g = grads(1, scale);
            let joint = norm(&g);
            let (muon_norm, adamw_norm) = (norm(&g[..1]), norm(&g[1..]));
            let c = (2.0 / (joint + 1e-6)).min(1.0);
            if scale > 0.5 {
                // Clipped by the joint norm, which neither route's own norm equals.
                assert!(
                    c < 0.5 && joint > 1.2 * muon_norm && joint > 1.2 * adamw_norm,
                    "{joint} {muon_norm} {adamw_norm}"
                );
            } else {
                assert_eq!(c, 1.0, "small gradients are not clipped");
            }
            step(&mut opt, &mut params, &g);
            // From zero state, each optimizer's first moment holds (1 - beta) times the clipped
            // gradient: Muon's (momentum 0.95) and AdamW's (beta1 0.9) alike.
            for (name, state, i, beta) in
                [("w", "muon.buf", 0, 0.95), ("e", "adamw.m", 1, 0.9), ("b", "adamw.m", 2, 0.9)]
            {
                let got = opt.state(name, state).expect("state");
                for (k, (x, gk)) in got.iter().zip(&g[i]).enumerate() {
                    let want = (1.0 - beta) * c * f64::from(*gk);
                    let err = (f64::from(*x) - want).abs();
                    assert!(
                        err <= 1e-6 * want.abs() + 1e-9,
                        "{backend:?}/{threads} scale {scale}: {state} of {name}[{k}] = {x}, want {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_cpu_steps_a_clipped_policy_as_the_interpreter_and_alike_on_any_threads() {
    let program = program();
    let run = |backend: Backend, threads: usize| {
        let mut opt =
            Optimizer::with_options(&program, &specs(), Options { backend, threads: Some(threads) }).expect("binds");
        opt.set_hyper("muon.ns_precision", 24.0).expect("float32 products");
        let mut params: Vec<Vec<f32>> =
            specs().iter().enumerate().map(|(i, s)| noise(70 + i, s.numel(), 0.5)).collect();
        for t in 0..8 {
            step(&mut opt, &mut params, &grads(t, [0.01, 1.0, 10.0][t % 3]));
        }
        params
    };
    let (one, two, exact) = (run(Backend::Cpu, 1), run(Backend::Cpu, 2), run(Backend::Interp, 1));
    assert_eq!(one, two, "the fold does not depend on threads");
    let mut worst = 0.0f64;
    for (a, b) in one.iter().flatten().zip(exact.iter().flatten()) {
        worst = worst.max((f64::from(*a) - f64::from(*b)).abs() / f64::from(b.abs()).max(1e-3));
    }
    assert!(worst < 1e-4, "CPU and interpreter differ by {worst:e}");
}

#[test]
fn a_policy_part_keeps_its_own_names() {
    let program = program();
    let mut opt = Optimizer::with_options(&program, &specs(), Options { backend: Backend::Cpu, threads: Some(1) })
        .expect("binds");
    assert_eq!(opt.hyper("max_norm"), Some(1.0), "clip_grad_norm's default");
    assert!(opt.set_hyper("muon.max_norm", 1.0).is_err(), "not under a routed optimizer's name");
    assert!(opt.set_hyper("adamw.max_norm", 1.0).is_err(), "not under a routed optimizer's name");
    assert!(opt.hyper("adamw.lr").is_some() && opt.hyper("muon.lr").is_some(), "the routed ones are prefixed");
}

/// A route whose optimizer ignores its gradient (a frozen embedding) still joins the clip's
/// norm, as `clip_grad_norm_(model.parameters())` counts every gradient: its variant keeps
/// the norm's pass though nothing of it reads the result.
#[test]
fn a_frozen_route_still_counts_in_the_norm() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dir = std::env::temp_dir().join(format!("gdc-frozen-policy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("optimizers")).expect("temp dir");
    std::fs::create_dir_all(dir.join("parts")).expect("temp dir");
    for f in ["optimizers/adamw.gd", "parts/transforms.gd"] {
        std::fs::copy(examples.join(f), dir.join(f)).expect("copy");
    }
    std::fs::write(dir.join("optimizers/keep.gd"), "optimizer keep {\n  update(p, g) {\n    p = p\n  }\n}\n")
        .expect("write");
    let policy = "use \"../parts/transforms.gd\"\nuse \"adamw.gd\"\nuse \"keep.gd\"\n\
                  policy frozen {\n  part clip_grad_norm\n  embedding -> keep\n  _ -> adamw\n}\n";
    std::fs::write(dir.join("optimizers/frozen.gd"), policy).expect("write");
    let program = Program::compile_file(dir.join("optimizers/frozen.gd")).expect("compiles");
    let specs =
        [ParamSpec::new("e", &[11, 6]).with_role(Role::Embedding), ParamSpec::new("b", &[6]).with_role(Role::Bias)];
    for (backend, threads) in [(Backend::Cpu, 2), (Backend::Interp, 1)] {
        let mut opt =
            Optimizer::with_options(&program, &specs, Options { backend, threads: Some(threads) }).expect("binds");
        let g = vec![noise(3, 66, 1.0), noise(4, 6, 1.0)];
        let mut params = vec![noise(5, 66, 0.5), noise(6, 6, 0.5)];
        let frozen = params[0].clone();
        step(&mut opt, &mut params, &g);
        assert_eq!(params[0], frozen, "{backend:?}: the frozen route moves nothing");
        let c = (1.0 / (norm(&g) + 1e-6)).min(1.0);
        assert!(c < 0.9 * (1.0 / norm(&g[1..])).min(1.0), "the frozen gradient matters to the norm");
        let m = opt.state("b", "adamw.m").expect("state");
        for (x, gk) in m.iter().zip(&g[1]) {
            let want = 0.1 * c * f64::from(*gk);
            assert!((f64::from(*x) - want).abs() <= 1e-6 * want.abs() + 1e-9, "{backend:?}: {x} != {want}");
        }
    }
}
