//! The FLOPs the CPU backend counts for a Muon step are those of the plan as it runs: five
//! Newton–Schulz iterations with two symmetric products each, on the wide orientation.

use gdc_runtime::{Optimizer, ParamSpec, Program};

#[test]
fn a_muon_step_executes_the_symmetric_newton_schulz_flops() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/muon.gd"))
        .expect("muon.gd");
    let program = Program::compile(&source).expect("compiles");
    // A tall [64, 32] matrix: Newton-Schulz runs on its [32, 64] transpose.
    let mut opt = Optimizer::new(&program, &[ParamSpec::new("w", &[64, 32])]).expect("binds");
    let mut p: Vec<f32> = (0..64 * 32).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
    let g: Vec<f32> = (0..64 * 32).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
    opt.step(&mut [&mut p], &[&g]).expect("steps");
    let (m, k): (u64, u64) = (32, 64);
    // x xT (symmetric, m x m over k), its square (symmetric, m x m over m), then B x.
    let per_iteration = m * (m + 1) * k + m * (m + 1) * m + 2 * m * m * k;
    assert_eq!(opt.matrix_flops(), Some(5 * per_iteration));
    opt.set_hyper("ns_steps", 2.0).expect("in range");
    opt.step(&mut [&mut p], &[&g]).expect("steps");
    assert_eq!(opt.matrix_flops(), Some(7 * per_iteration), "iterations past ns_steps run nothing");
}
