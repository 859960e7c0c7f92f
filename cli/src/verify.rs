//! `gdc verify`: steps a compiled optimizer on a backend and on the float64 reference
//! interpreter with the same random parameters, gradients and hyperparameters, and compares
//! every parameter after every step within a tolerance derived from float32 rounding. The
//! shapes are the awkward ones: one element, sizes that are not a multiple of the vector
//! width, a tensor longer than a GPU chunk, matrices, and many small tensors at once.

use clap::{Args, ValueEnum};
use gdc_runtime::{Backend, HyperTy, Optimizer, Options, ParamSpec, Program};
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

/// Deterministic values in [-1, 1) (xorshift), the same for a seed on every machine.
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 52) as f64 - 1.0) as f32
        })
        .collect()
}

/// Shapes for one case: square and oblong matrices, a rank-3 tensor, vectors of one
/// element, of a few, and longer than a GPU chunk, and 40 small vectors at once (as many as
/// the optimizer's variants take). Optimizers with per-dimension matrix statistics (state of
/// shape `[rows, rows]` or `[cols, cols]`) keep small square matrices: the interpreter
/// decomposes them slowly, and a non-square gradient gives statistics of deficient rank,
/// where float32 and float64 legitimately disagree (see tests/agreement.rs).
fn shapes(seed: u64, program: &Program) -> Vec<Vec<usize>> {
    use gdc_compiler::ir::Pattern;
    let m = &program.plan().module;
    let pick = |k: u64, lo: usize, hi: usize| lo + (noise(seed * 31 + k, 1)[0].abs() * (hi - lo) as f32) as usize;
    let matrix_state = m.states.iter().any(|s| {
        let t = s.shape.to_string();
        t.contains("rows, rows") || t.contains("cols, cols")
    });
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

/// Random hyperparameters within their ranges (the agreement test's rule).
fn random_hypers(program: &Program, seed: u64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (i, h) in program.plan().module.hypers.iter().enumerate() {
        let u = f64::from(noise(seed * 977 + i as u64, 1)[0].abs());
        let (lo, hi) = h.range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let value = match h.ty {
            HyperTy::Bool => f64::from(u8::from(u > 0.5)),
            HyperTy::Int => (lo.max(0.0) + (u * (hi.min(12.0) - lo.max(0.0) + 1.0)).floor()).min(hi.min(12.0)),
            HyperTy::F32 if h.default > 0.5 && h.default < 1.0 => {
                (1.0 - (1.0 - h.default) * (0.5 + 1.5 * u)).clamp(lo, hi)
            }
            HyperTy::F32 if h.default == 0.0 => (0.9 * u).clamp(lo, hi),
            HyperTy::F32 => (h.default * (0.5 + 1.5 * u)).clamp(lo, hi),
        };
        out.push((h.name.clone(), value));
    }
    out
}

type Trajectory = Vec<Vec<Vec<f32>>>;

fn run(
    program: &Program,
    specs: &[ParamSpec],
    backend: Backend,
    seed: u64,
    steps: usize,
) -> Result<Trajectory, String> {
    let options = Options { backend, ..Options::default() };
    let mut opt = Optimizer::with_options(program, specs, options).map_err(|e| e.to_string())?;
    if seed > 3 {
        for (name, value) in random_hypers(program, seed) {
            opt.set_hyper(&name, value).map_err(|e| format!("{name} = {value}: {e}"))?;
        }
    }
    let mut params: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(seed + i as u64, s.numel())).collect();
    let mut out = Vec::new();
    for t in 0..steps {
        let grads: Vec<Vec<f32>> =
            specs.iter().enumerate().map(|(i, s)| noise(seed * 1000 + (t * 50 + i) as u64, s.numel())).collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).map_err(|e| format!("step {}: {e}", t + 1))?;
        out.push(params.clone());
    }
    Ok(out)
}

/// The worst error of `got` against `want` as a fraction of the tolerance (1e-4 of the
/// parameter's largest magnitude, at least 1e-4), with the first place it exceeds 1.
fn compare(want: &Trajectory, got: &Trajectory, specs: &[ParamSpec]) -> (f64, Option<String>) {
    let mut worst = 0.0f64;
    let mut first = None;
    for (t, (w, g)) in want.iter().zip(got).enumerate() {
        for (pi, (wp, gp)) in w.iter().zip(g).enumerate() {
            let scale = wp.iter().filter(|x| x.is_finite()).fold(0.0f32, |a, x| a.max(x.abs())).max(1.0);
            for (j, (a, b)) in wp.iter().zip(gp).enumerate() {
                let same = (a.is_nan() && b.is_nan()) || (a.is_infinite() && a == b);
                let err = if same { 0.0 } else { f64::from((a - b).abs()) / (1e-4 * f64::from(scale)) };
                let err = if err.is_nan() { f64::INFINITY } else { err };
                if err > 1.0 && first.is_none() {
                    first = Some(format!(
                        "step {} {}{:?}[{j}]: interpreter {a}, backend {b}",
                        t + 1,
                        specs[pi].name,
                        specs[pi].shape
                    ));
                }
                worst = worst.max(err);
            }
        }
    }
    (worst, first)
}

/// Loads the program for `backend`: an artifact as is, or a source compiled here (for
/// cuda, through the `mlir` feature).
fn program(file: &str, backend: VerifyBackend) -> Result<Program, String> {
    if file.ends_with(".gdo") {
        return Program::load(file).map_err(|e| e.to_string());
    }
    let source = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    match backend {
        VerifyBackend::Cpu => Program::compile(&source).map_err(|e| e.to_string()),
        VerifyBackend::Cuda => crate::build::cuda_program(file, &source),
    }
}

/// Exit 0 when every case agrees, 1 when one does not, 2 when it cannot run.
pub fn run_verify(args: &VerifyArgs) -> Result<ExitCode, ExitCode> {
    let program = program(&args.file, args.backend).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let (backend, name) = match args.backend {
        VerifyBackend::Cpu => (Backend::Cpu, "cpu"),
        VerifyBackend::Cuda => (Backend::Cuda, "cuda"),
    };
    let mut failed = 0;
    for seed in 1..=args.seeds {
        let specs: Vec<ParamSpec> =
            shapes(seed, &program).iter().enumerate().map(|(i, s)| ParamSpec::new(format!("p{i}"), s)).collect();
        let elements: usize = specs.iter().map(|s| s.numel()).sum();
        let want = run(&program, &specs, Backend::Interp, seed, args.steps);
        let got = run(&program, &specs, backend, seed, args.steps);
        let (want, got) = match (want, got) {
            (Ok(w), Ok(g)) => (w, g),
            (Err(e), _) => {
                eprintln!("error: the interpreter cannot run seed {seed}: {e}");
                return Err(ExitCode::from(2));
            }
            (_, Err(e)) => {
                eprintln!("error: {name} cannot run seed {seed}: {e}");
                return Err(ExitCode::from(2));
            }
        };
        let (worst, first) = compare(&want, &got, &specs);
        let verdict = if first.is_none() { "ok" } else { "FAIL" };
        println!(
            "verify {} on {name}: seed {seed}, {} tensors, {elements} elements, {} steps: worst {worst:.4} of tolerance {verdict}",
            program.name(),
            specs.len(),
            args.steps
        );
        if let Some(f) = first {
            println!("  first disagreement: {f}");
            failed += 1;
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
