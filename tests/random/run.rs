//! Running one random case: compile it, step it on the float64 interpreter and on the CPU
//! backend from the same data, and compare within the float32-derived tolerance of
//! `gdc_runtime::verify` (1e-4 of each parameter's largest magnitude; 2e-3 with bf16
//! state); where this CPU runs a level of the LLVM tier (feature `mlir`), the case is also
//! stepped with the tier's kernels, which must equal Cranelift's bit for bit. Every way it
//! can go wrong is a [`Failure`] with a signature, so the shrinker can
//! ask whether a smaller program still fails the same way.

use super::ast::{Kind, Prog};
use super::generate::Rng;
use gdc_runtime::verify::{reconcile, trajectory};
use gdc_runtime::{Backend, Options, ParamSpec, Program, RuntimeError};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A program with the parameters and data it runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub source: String,
    pub shapes: Vec<Vec<usize>>,
    /// Data seeds (`verify::trajectory`: above 3, hyperparameters are random too).
    pub seeds: Vec<u64>,
    pub steps: usize,
    /// CPU worker threads.
    pub threads: usize,
}

/// How a case failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The checker rejected a program the generator believed well-typed (a generator bug).
    Rejected(String),
    /// An internal compiler error or a CPU code generation failure.
    Internal(String),
    /// A panic anywhere.
    Panic(String),
    /// A backend refused to step (or the interpreter failed).
    RunError(String),
    /// The backends disagree beyond the tolerance.
    Mismatch { worst: f64, first: String },
    /// The LLVM tier's kernels and Cranelift's step differently (they must not differ at all).
    NativeMismatch(String),
}

impl Failure {
    /// What must stay the same while shrinking: the kind, and for errors the first line of
    /// the message with numbers blanked (so a smaller program with another value name still
    /// counts).
    pub fn signature(&self) -> String {
        let norm = |s: &str| -> String {
            let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let cut: String = line.chars().filter(|c| !c.is_ascii_digit()).take(70).collect();
            cut
        };
        match self {
            Failure::Rejected(m) => format!("rejected {}", error_code(m).unwrap_or_else(|| norm(m))),
            Failure::Internal(m) => format!("internal {}", norm(m)),
            Failure::Panic(m) => format!("panic {}", norm(m)),
            Failure::RunError(m) => format!("run error {}", norm(m)),
            Failure::Mismatch { .. } => "mismatch".to_string(),
            Failure::NativeMismatch(_) => "native mismatch".to_string(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Failure::Rejected(m) => format!("checker rejected the program: {m}"),
            Failure::Internal(m) => format!("internal error: {m}"),
            Failure::Panic(m) => format!("panic: {m}"),
            Failure::RunError(m) => format!("run error: {m}"),
            Failure::Mismatch { worst, first } => {
                format!("interpreter and CPU disagree: worst {worst:.3e} of the tolerance; first: {first}")
            }
            Failure::NativeMismatch(m) => format!("the LLVM tier and Cranelift step differently: {m}"),
        }
    }
}

fn error_code(m: &str) -> Option<String> {
    let at = m.find("error[")?;
    Some(m[at..].chars().take(11).collect())
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// A passing case: the worst error as a fraction of the tolerance, and whether most
/// reference values were finite (if not, the comparison proved little).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pass {
    pub worst: f64,
    pub vacuous: bool,
    /// Whether the LLVM tier's kernels stepped it too (bit for bit like Cranelift's).
    pub native: bool,
    /// Values only the float32-rounded reference explains (`Agreement::flipped`).
    pub flipped: usize,
}

/// Compiles and runs `case`, catching panics.
pub fn run_case(case: &Case) -> Result<Pass, Failure> {
    let program = match catch_unwind(|| Program::compile(&case.source)) {
        Err(p) => return Err(Failure::Panic(format!("compiling: {}", panic_message(p)))),
        Ok(Err(RuntimeError::Compile(m))) if m.contains("internal compiler error") => return Err(Failure::Internal(m)),
        Ok(Err(RuntimeError::Compile(m))) => return Err(Failure::Rejected(m)),
        Ok(Err(e)) => return Err(Failure::Internal(e.to_string())),
        Ok(Ok(p)) => p,
    };
    let specs: Vec<ParamSpec> =
        case.shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("w{i}"), s)).collect();
    let native = native_program(case)?;
    let mut pass = Pass { worst: 0.0, vacuous: false, native: native.is_some(), flipped: 0 };
    for &seed in &case.seeds {
        let run = |program: &Program, backend: Backend, name: &str| -> Result<_, Failure> {
            let options = Options { backend, threads: Some(case.threads) };
            match catch_unwind(AssertUnwindSafe(|| trajectory(program, &specs, options, seed, case.steps))) {
                Err(p) => Err(Failure::Panic(format!("stepping on {name}: {}", panic_message(p)))),
                Ok(Err(e)) => Err(Failure::RunError(format!("{name}: {e}"))),
                Ok(Ok(t)) => Ok(t),
            }
        };
        let got = run(&program, Backend::Cpu, "cpu")?;
        let want = run(&program, Backend::Interp, "interp")?;
        if let Some(native) = &native {
            let same = run(native, Backend::Cpu, "cpu (LLVM tier)")?;
            if let Some(at) = first_difference(&got, &same) {
                return Err(Failure::NativeMismatch(format!("seed {seed}: {at}")));
            }
        }
        let agreement =
            reconcile(&program, &want, &got, &specs, || run(&program, Backend::InterpF32, "interp (float32)"))?;
        if let Some(first) = agreement.first {
            return Err(Failure::Mismatch { worst: agreement.worst, first: format!("seed {seed}: {first}") });
        }
        pass.worst = pass.worst.max(agreement.worst);
        pass.flipped += agreement.flipped;
        pass.vacuous |= agreement.finite * 10 < agreement.total * 9;
    }
    Ok(pass)
}

/// The case's program with the LLVM tier's kernels, where this CPU runs one of its levels
/// and the tests were built with the MLIR backend.
fn native_program(case: &Case) -> Result<Option<Program>, Failure> {
    #[cfg(feature = "mlir")]
    {
        use gdc_compiler::artifact::{Artifact, Target};
        if gdc_compiler::cpu::native::Level::best_available().is_none() {
            return Ok(None);
        }
        let compiled = gdc_compiler::compile(&case.source).map_err(|e| Failure::Internal(e.to_string()))?;
        let mut artifact = Artifact::from_compiled(&compiled, &case.source, "random.gd", Target::Cpu);
        artifact.native = match catch_unwind(|| gdc_compiler::cpu::llvm::compile(&compiled.plan)) {
            Err(p) => return Err(Failure::Panic(format!("compiling the LLVM tier: {}", panic_message(p)))),
            Ok(Err(e)) => return Err(Failure::Internal(format!("the LLVM tier: {e}"))),
            Ok(Ok(n)) => n,
        };
        Program::from_artifact(artifact).map(Some).map_err(|e| Failure::Internal(format!("the LLVM tier: {e}")))
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = case;
        Ok(None)
    }
}

/// Where two trajectories first differ in any bit (NaN equals NaN).
fn first_difference(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>]) -> Option<String> {
    for (t, (x, y)) in a.iter().zip(b).enumerate() {
        for (p, (u, v)) in x.iter().zip(y).enumerate() {
            if let Some(i) =
                u.iter().zip(v).position(|(m, n)| m.to_bits() != n.to_bits() && !(m.is_nan() && n.is_nan()))
            {
                return Some(format!(
                    "step {} parameter {p} element {i}: {} natively, {} on Cranelift",
                    t + 1,
                    v[i],
                    u[i]
                ));
            }
        }
    }
    None
}

/// Parameter shapes for a program's updates: each update gets parameters of the ranks it
/// takes (a vector, a matrix, a rank-3 tensor flattened or batched), sizes small and odd.
pub fn shapes_for(prog: &Prog, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let kinds: Vec<Kind> = prog.updates.iter().map(|u| u.kind).collect();
    let has = |k: Kind| kinds.contains(&k);
    let matrix = has(Kind::Matrix) || has(Kind::Batched);
    let mut out = Vec::new();
    let dim = |rng: &mut Rng| 1 + rng.below(6);
    if matrix || has(Kind::Any) {
        out.push(vec![dim(&mut rng), dim(&mut rng)]);
        if rng.chance(1, 2) {
            out.push(vec![8 + rng.below(8), 1 + rng.below(4)]);
        }
        if rng.chance(1, 2) || has(Kind::Batched) {
            out.push(vec![2 + rng.below(2), dim(&mut rng), 1 + rng.below(3)]);
        }
    }
    if has(Kind::Vector) || has(Kind::Any) {
        out.push(vec![1 + rng.below(40)]);
        if rng.chance(1, 3) {
            out.push(vec![1]);
        }
        if rng.chance(1, 4) && !has(Kind::Vector) {
            out.push(vec![1000 + rng.below(40)]);
        }
    }
    out
}

/// The case a program runs as in a numbered run.
pub fn case_for(prog: &Prog, seed: u64) -> Case {
    Case {
        source: prog.render(),
        shapes: shapes_for(prog, seed),
        seeds: vec![1 + seed % 3, 4 + seed % 997],
        steps: 4,
        threads: 1 + (seed % 2) as usize,
    }
}
