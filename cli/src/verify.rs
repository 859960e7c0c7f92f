//! `gdc verify`: steps a compiled optimizer on a backend and on the float64 reference
//! interpreter with the same random parameters, gradients and hyperparameters, and compares
//! every parameter after every step within a tolerance derived from float32 rounding. The
//! shapes are the awkward ones: one element, sizes that are not a multiple of the vector
//! width, a tensor longer than a GPU chunk, matrices, and many small tensors at once. Where a
//! discontinuous operation flips on a float32 zero, the values the float32-rounded
//! interpreter explains are counted and printed, not failed (`gdc_runtime::verify::reconcile`).

use clap::{Args, ValueEnum};
use gdc_runtime::verify::{check, noise_f32 as noise};
use gdc_runtime::{Backend, Options, ParamSpec, Program};
use std::process::ExitCode;

/// The arguments of `gdc verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The optimizer: a .gd source or a .gdo artifact (`--backend cuda` needs an artifact
    /// built with `--target cuda`, or a gdc with the `mlir` feature).
    file: String,
    /// The backend checked against the interpreter.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: VerifyBackend,
    /// Random cases (seeds); from the fourth on, hyperparameters are random too.
    #[arg(long, default_value_t = 4)]
    seeds: u64,
    /// Steps per case.
    #[arg(long, default_value_t = 4)]
    steps: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerifyBackend {
    Cpu,
    Cuda,
}

/// Shapes for one case: square and oblong matrices, a rank-3 tensor, vectors of one
/// element, of a few, and longer than a GPU chunk, and 40 small vectors at once (as many as
/// the optimizer's variants take). Optimizers with per-dimension matrix statistics (state of
/// shape `[rows, rows]` or `[cols, cols]`) keep small square matrices: the interpreter
/// decomposes them slowly, and a non-square gradient gives statistics of deficient rank,
/// where float32 and float64 legitimately disagree (see tests/agreement.rs).
fn shapes(seed: u64, program: &Program) -> Vec<Vec<usize>> {
    use gdc_compiler::interp::names_of;
    use gdc_compiler::ir::Pattern;
    let m = &program.plan().module;
    let pick = |k: u64, lo: usize, hi: usize| lo + (noise(seed * 31 + k, 1)[0].abs() * (hi - lo) as f32) as usize;
    let matrix_state = m.states.iter().any(|s| matches!(&names_of(&s.shape)[..], [a, b] if a == b));
    let vectors = m.variants.iter().any(|v| matches!(v.pattern, Pattern::Any | Pattern::Vector));
    let n = pick(1, 2, 9);
    let mut s = vec![vec![n, n], vec![1, 1]];
    if !matrix_state {
        s.push(vec![pick(3, 9, 40), pick(4, 1, 5)]);
        s.push(vec![pick(2, 30, 70), pick(4, 100, 300)]);
        s.push(vec![3, 2, pick(7, 1, 4)]);
    }
    if vectors {
        let long = if matrix_state { pick(6, 21, 40) } else { 70_001 + pick(6, 0, 3000) };
        s.extend([vec![1], vec![pick(5, 2, 20)], vec![long]]);
        if !matrix_state {
            for k in 0..40 {
                s.push(vec![1 + pick(100 + k, 0, 300)]);
            }
        }
    }
    s
}

/// Exit 0 when every case agrees, 1 when one does not, 2 when it cannot run.
pub fn run_verify(args: &VerifyArgs) -> Result<ExitCode, ExitCode> {
    let program = crate::load_program(&args.file, matches!(args.backend, VerifyBackend::Cuda), 2)?;
    let (backend, name) = match args.backend {
        VerifyBackend::Cpu => (Backend::Cpu, "cpu"),
        VerifyBackend::Cuda => (Backend::Cuda, "cuda"),
    };
    let mut failed = 0;
    for seed in 1..=args.seeds {
        let specs: Vec<ParamSpec> =
            shapes(seed, &program).iter().enumerate().map(|(i, s)| ParamSpec::new(format!("p{i}"), s)).collect();
        let elements: usize = specs.iter().map(|s| s.numel()).sum();
        let options = Options { backend, ..Options::default() };
        let agreement = check(&program, &specs, options, seed, args.steps).map_err(|e| {
            eprintln!("error: cannot run seed {seed} on {name} and the interpreter: {e}");
            ExitCode::from(2)
        })?;
        let (worst, mut first) = (agreement.worst, agreement.first);
        if first.is_none() && agreement.finite * 10 < agreement.total * 9 {
            first = Some(format!(
                "only {} of {} reference values are finite: the comparison would prove nothing",
                agreement.finite, agreement.total
            ));
        }
        let verdict = if first.is_none() { "ok" } else { "FAIL" };
        println!(
            "verify {} on {name}: seed {seed}, {} tensors, {elements} elements, {} steps: worst {worst:.4} of tolerance {verdict}",
            program.name(),
            specs.len(),
            args.steps
        );
        if agreement.flipped > 0 {
            println!(
                "  {} of {} values agree with the float32-rounded interpreter, not the float64 one: a discontinuous operation (sign, a comparison) flipped on a value that is exactly zero in float32",
                agreement.flipped, agreement.total
            );
        }
        if let Some(f) = first {
            println!("  first disagreement: {f}");
            failed += 1;
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
