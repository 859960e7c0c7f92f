//! Composition compiles to what the same optimizer written out compiles to. The three
//! composed toolkit examples, adamw_ema.gd (`weight_ema(adamw)`), adamw_clip_cosine.gd (a chain
//! of optax's transformations) and adamw_mup.gd (adamw.gd as a part, its lr and decay bound
//! per parameter), against the hand-written versions they replaced (tests/written/): the same
//! kernels and buffer passes, the same bytes moved per step, and the same parameters and
//! state after every step, bit for bit, on the CPU and on the interpreter.

use gdc_runtime::bench::bytes_per_step;
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};

/// Each example, its state names, and hyperparameters that make every stage matter
/// (clipping active, warmup and decay both reached).
/// An example's name, its state names and hyperparameter settings.
type Case = (&'static str, &'static [&'static str], &'static [(&'static str, f64)]);

const CASES: &[Case] = &[
    ("adamw_ema", &["m", "v", "ema"], &[("lr", 0.02), ("weight_decay", 0.1), ("ema_decay", 0.7)]),
    (
        "adamw_clip_cosine",
        &["m", "v"],
        &[("lr", 0.05), ("warmup_steps", 2.0), ("decay_steps", 5.0), ("end_lr", 1e-3), ("max_grad_norm", 0.5)],
    ),
    ("adamw_mup", &["m", "v"], &[("lr", 0.03), ("weight_decay", 0.2)]),
];

fn compiled(path: &str) -> Program {
    Program::compile_file(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn programs(name: &str) -> (Program, Program) {
    let root = env!("CARGO_MANIFEST_DIR");
    (
        compiled(&format!("{root}/../examples/optimizers/{name}.gd")),
        compiled(&format!("{root}/tests/written/{name}.gd")),
    )
}

/// The plan's text without its hyperparameter declarations, whose order follows the parts
/// (kernels name hyperparameters, so reordering them changes nothing else).
fn plan_body(p: &Program) -> (String, Vec<String>) {
    let text = gdc_compiler::plan::print::plan_text(p.plan());
    let (mut hypers, body): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with("hyper "));
    hypers.sort_unstable();
    (body.join("\n"), hypers.into_iter().map(str::to_string).collect())
}

fn specs() -> Vec<ParamSpec> {
    vec![
        // muP: matrix-like (both dimensions grew), vector-like, and unchanged parameters.
        ParamSpec::new("w", &[12, 8]).with_base_shape(&[6, 4]),
        ParamSpec::new("head", &[12, 8]).with_base_shape(&[6, 8]),
        ParamSpec::new("b", &[37]).with_base_shape(&[37]),
        ParamSpec::new("big", &[70, 33]),
    ]
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    gdc_runtime::bench::fill_uniform(&mut s, n, 1.0)
}

#[test]
fn composed_plans_are_the_hand_written_plans() {
    for (name, _, _) in CASES {
        let (composed, written) = programs(name);
        for (a, b) in composed.plan().variants.iter().zip(&written.plan().variants) {
            assert_eq!(a.update.items.len(), b.update.items.len(), "{name}: kernels and library calls");
            assert_eq!(a.update.temps.len(), b.update.temps.len(), "{name}: temporary buffers");
        }
        assert_eq!(composed.plan().variants.len(), written.plan().variants.len(), "{name}: update variants");
        assert_eq!(plan_body(&composed), plan_body(&written), "{name}: the plans differ");
        let specs = specs();
        assert_eq!(
            bytes_per_step(composed.plan(), &specs).expect("binds"),
            bytes_per_step(written.plan(), &specs).expect("binds"),
            "{name}: bytes moved per step"
        );
    }
}

#[test]
fn composed_optimizers_step_bit_for_bit_as_written() {
    for backend in [Backend::Cpu, Backend::Interp] {
        for (name, states, hypers) in CASES {
            let (composed, written) = programs(name);
            let specs = specs();
            let options = Options { backend, threads: Some(2) };
            let mut runs = Vec::new();
            for program in [&composed, &written] {
                let mut opt = Optimizer::with_options(program, &specs, options).expect("binds");
                for (h, v) in *hypers {
                    opt.set_hyper(h, *v).unwrap_or_else(|e| panic!("{name}: {h}: {e}"));
                }
                let mut params: Vec<Vec<f32>> =
                    specs.iter().enumerate().map(|(i, s)| values(s.numel(), i as u64)).collect();
                for step in 0..7u64 {
                    // Gradients that change scale by 100x, so clipping is on for some steps only.
                    let scale = if step % 3 == 1 { 100.0 } else { 1.0 };
                    let grads: Vec<Vec<f32>> = specs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| values(s.numel(), 100 + 10 * step + i as u64).iter().map(|x| x * scale).collect())
                        .collect();
                    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
                    let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                    opt.step(&mut views, &gviews).expect("steps");
                }
                let state: Vec<Vec<f32>> = specs
                    .iter()
                    .flat_map(|s| states.iter().map(|st| opt.state(&s.name, st).expect("state")).collect::<Vec<_>>())
                    .collect();
                runs.push((params, state));
            }
            let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&runs[0].0), bits(&runs[1].0), "{name} on {backend:?}: parameters");
            assert_eq!(bits(&runs[0].1), bits(&runs[1].1), "{name} on {backend:?}: state");
        }
    }
}

/// A policy routes to a composed optimizer like to any other: `adamw_ema` (itself
/// `weight_ema(adamw)`, from files it uses) beside Muon, its names under `adamw_ema.`.
#[test]
fn a_policy_routes_to_a_composed_optimizer() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers");
    let dir = std::env::temp_dir().join(format!("gdc-composed-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let policy = format!(
        "use \"{root}/muon.gd\"\nuse \"{root}/adamw_ema.gd\"\npolicy p {{\n  hidden [rows, cols] -> muon\n  _ -> adamw_ema\n}}\n"
    );
    std::fs::write(dir.join("p.gd"), policy).expect("write");
    let program = Program::compile_file(dir.join("p.gd")).expect("compiles");
    let specs = [ParamSpec::new("w", &[6, 4]).with_role(gdc_runtime::Role::Hidden), ParamSpec::new("b", &[4])];
    let mut opt =
        Optimizer::with_options(&program, &specs, Options { backend: Backend::Cpu, threads: Some(1) }).expect("binds");
    opt.set_hyper("adamw_ema.ema_decay", 0.0).expect("the composed optimizer's hyperparameter, prefixed");
    let mut params: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| values(s.numel(), i as u64)).collect();
    let grads: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| values(s.numel(), 50 + i as u64)).collect();
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    opt.step(&mut views, &gviews).expect("steps");
    // With ema_decay 0 the average is the stepped parameter itself.
    assert_eq!(opt.state("b", "adamw_ema.ema").expect("the bias is AdamW's"), params[1]);
    assert!(opt.state("w", "muon.buf").is_some(), "the hidden matrix is Muon's");
    let _ = std::fs::remove_dir_all(&dir);
}
