//! The `gdc` command: check a `.gd` file, print any stage of its compilation, build an
//! artifact, replay a golden case on a backend, or benchmark a step.

use clap::{Parser, Subcommand, ValueEnum};
use gdc_compiler::{compile, golden, ir, plan, CompileError};
use std::process::ExitCode;

mod bench;
mod build;
mod verify;

#[derive(Parser)]
#[command(
    name = "gdc",
    version,
    about = "The Guided Descent Compiler: optimizers written as .gd files, compiled to fused kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time an optimizer's step on synthetic parameters: median and spread of the step time,
    /// ns per parameter and effective GB/s (bytes the plan moves per step / median time).
    ///
    /// Exit 0 on success, 1 when the optimizer does not compile, 2 on bad arguments.
    Bench(bench::BenchArgs),
    /// Compile a .gd file into a versioned artifact (.gdo) for a target.
    ///
    /// Exit 0 on success, 1 when the source has errors, 2 when a file cannot be read or written.
    Build(build::BuildArgs),
    /// Check a .gd file and print its diagnostics (exit 0 when clean, 1 on errors).
    Check {
        /// The optimizer source file.
        file: String,
    },
    /// Print one stage of the compilation of a .gd file.
    Emit {
        /// The optimizer source file.
        file: String,
        /// The stage to print.
        #[arg(long, value_enum, default_value = "plan")]
        stage: Stage,
        /// The GPU architecture (`--stage ptx`): sm_80 or sm_90.
        #[arg(long, default_value = "sm_90")]
        arch: String,
    },
    /// Step an optimizer on a backend and on the reference interpreter with the same random
    /// data (awkward shapes, many tensors, random hyperparameters) and compare every step.
    /// Where a discontinuous operation (`sign`, a comparison) flipped on a value that is
    /// exactly zero in float32, the values the float32-rounded interpreter explains are
    /// counted and printed instead of failing.
    ///
    /// Exit 0 when every case agrees, 1 when one does not, 2 when it cannot run.
    Verify(verify::VerifyArgs),
    /// Replay a golden case (gdc-golden-1 JSON) and compare every step with its tolerance.
    ///
    /// Prints, per step, the worst error as a fraction of the tolerance (<= 1 passes).
    /// Exit 0 when every step is within tolerance, 1 when one is not, 2 on bad input.
    Replay {
        /// The optimizer: a .gd source, or a .gdo artifact (for `--backend cuda` on a
        /// machine whose gdc has no `mlir` feature).
        file: String,
        /// The golden case.
        case: String,
        /// Which backend runs the steps.
        #[arg(long, value_enum, default_value = "interp")]
        backend: Backend,
        /// Write the trajectory (parameters after every step) as JSON to this file.
        #[arg(long)]
        out: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    /// The syntax tree.
    Ast,
    /// The IR as lowered, before any pass.
    Ir,
    /// The IR after the optimisation pipeline.
    IrOpt,
    /// The kernel plan every backend consumes.
    Plan,
    /// The Cranelift IR of every kernel of the CPU backend.
    Clif,
    /// The GPU backend's kernels as one MLIR `gpu.module`.
    Mlir,
    /// The CPU's LLVM tier: the flat kernels as MLIR functions for x86-64-v3 (AVX2).
    CpuMlir,
    /// The GPU backend's PTX for `--arch` (needs the `mlir` feature).
    Ptx,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The float64 reference interpreter.
    Interp,
    /// Cranelift machine code, float32, over a pool of worker threads.
    Cpu,
    /// PTX kernels on an NVIDIA GPU, float32.
    Cuda,
}

/// A `.gd` file's source, with the files a policy `use`s inlined (see `gdc_dsl::policy`).
fn read(file: &str) -> Result<String, ExitCode> {
    gdc_dsl::policy::load(std::path::Path::new(file)).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Compiles, printing diagnostics; `Err` carries the exit code.
fn build(file: &str, source: &str, bad_code: u8) -> Result<gdc_compiler::Compiled, ExitCode> {
    match compile(source) {
        Ok(c) => {
            if !c.warnings.is_empty() {
                eprint!("{}", gdc_dsl::render(&c.warnings, file, source));
            }
            Ok(c)
        }
        Err(CompileError::Source(diags)) => {
            eprint!("{}", gdc_dsl::render(&diags, file, source));
            let n = diags.iter().filter(|d| d.is_error()).count();
            eprintln!("error: {file}: {n} error{}", if n == 1 { "" } else { "s" });
            Err(ExitCode::from(bad_code))
        }
        Err(e @ CompileError::Internal(_)) => {
            eprintln!("{e}\nThis is a bug in gdc; please report it with the .gd file.");
            Err(ExitCode::from(101))
        }
    }
}

/// The program a command runs: a `.gdo` artifact as it is, or a `.gd` source compiled here
/// (its diagnostics printed; exit `bad_code` on errors in it), with GPU code when `cuda`,
/// else with the CPU's LLVM tier where this CPU runs one of its levels (as `gdc build` would
/// put in the artifact; `GDC_NO_NATIVE=1`: Cranelift only).
fn load_program(file: &str, cuda: bool, bad_code: u8) -> Result<gdc_runtime::Program, ExitCode> {
    let fail = |e: String| {
        eprintln!("error: {file}: {e}");
        ExitCode::from(2)
    };
    if file.ends_with(".gdo") {
        // Artifact errors name the file themselves.
        return gdc_runtime::Program::load(file).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        });
    }
    let source = read(file)?;
    let compiled = build(file, &source, bad_code)?;
    if cuda {
        return build::cuda_program(file, &source).map_err(fail);
    }
    if gdc_compiler::cpu::native::Level::best_available().is_none() {
        return gdc_runtime::Program::compile(&source).map_err(|e| fail(e.to_string()));
    }
    let mut artifact =
        gdc_compiler::artifact::Artifact::from_compiled(&compiled, &source, file, gdc_compiler::artifact::Target::Cpu);
    artifact.native = build::native_code(file, &compiled.plan)?;
    gdc_runtime::Program::from_artifact(artifact).map_err(|e| fail(e.to_string()))
}

fn run(cli: Cli) -> Result<ExitCode, ExitCode> {
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Build(args) => build::run(&args),
        Command::Check { file } => {
            let source = read(&file)?;
            build(&file, &source, 1)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emit { file, stage, arch } => {
            let source = read(&file)?;
            let c = build(&file, &source, 1)?;
            match stage {
                Stage::Ast => print!("{}", gdc_dsl::print::file_text(&c.ast)),
                Stage::Ir => print!("{}", ir::print::module_text(&c.ir)),
                Stage::IrOpt => print!("{}", ir::print::module_text(&c.optimized)),
                Stage::Plan => print!("{}", plan::print::plan_text(&c.plan)),
                Stage::Clif => match gdc_compiler::cpu::clif_text(&c.plan) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        eprintln!("error: the CPU backend cannot compile {file}: {e}");
                        return Err(ExitCode::from(101));
                    }
                },
                Stage::Mlir => match gdc_compiler::gpu::mlir::module_text(&c.plan) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        eprintln!("error: the GPU backend cannot compile {file}: {e}");
                        return Err(ExitCode::from(101));
                    }
                },
                Stage::CpuMlir => {
                    match gdc_compiler::cpu::mlir::module_text(&c.plan, gdc_compiler::cpu::native::Level::V3) {
                        Ok((text, _)) => print!("{text}"),
                        Err(e) => {
                            eprintln!("error: the CPU backend cannot compile {file}: {e}");
                            return Err(ExitCode::from(101));
                        }
                    }
                }
                Stage::Ptx => print!("{}", build::gpu_program(&file, &c.plan, &arch)?.ptx),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => verify::run_verify(&args),
        Command::Replay { file, case, backend, out } => {
            let program = load_program(&file, matches!(backend, Backend::Cuda), 2)?;
            let case_data = golden::read_case(&case).map_err(|e| {
                eprintln!("error: {e}");
                ExitCode::from(2)
            })?;
            let (results, backend_name) = match backend {
                Backend::Interp => {
                    (golden::replay(program.plan().clone(), &case_data).map_err(|e| e.to_string()), "interp")
                }
                Backend::Cpu => {
                    let r = gdc_runtime::replay::replay(&program, &case_data, gdc_runtime::Backend::Cpu);
                    (r.map_err(|e| e.to_string()), "cpu")
                }
                Backend::Cuda => {
                    let r = gdc_runtime::replay::replay(&program, &case_data, gdc_runtime::Backend::Cuda);
                    (r.map_err(|e| e.to_string()), "cuda")
                }
            };
            let results = results.map_err(|e| {
                eprintln!("error: {case}: {e}");
                ExitCode::from(2)
            })?;
            println!(
                "replay {} on {backend_name}: {} step(s), tolerance rel {} abs {}",
                case,
                results.len(),
                case_data.tolerance.rel,
                case_data.tolerance.abs
            );
            let mut failed = 0;
            for r in &results {
                let ok = r.worst <= 1.0;
                failed += usize::from(!ok);
                println!(
                    "step {:>3}: worst {:.4} of tolerance at {}{}",
                    r.step,
                    r.worst,
                    r.at,
                    if ok { "" } else { "  FAIL" }
                );
            }
            if let Some(path) = out {
                let json = serde_json::json!({ "format": "gdc-trajectory-1", "optimizer": case_data.optimizer, "backend": backend_name, "steps": results });
                std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap_or_default()).map_err(|e| {
                    eprintln!("error: cannot write {path}: {e}");
                    ExitCode::from(2)
                })?;
            }
            if failed == 0 {
                println!("ok: every step within tolerance");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("FAILED: {failed} of {} steps outside tolerance", results.len());
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn main() -> ExitCode {
    restore_sigpipe();
    run(Cli::parse()).unwrap_or_else(|code| code)
}

/// Output piped into a program that stops reading (`gdc emit FILE --stage ir | head`) ends
/// gdc quietly, as it ends other Unix tools, instead of panicking inside `print!` (Rust
/// ignores SIGPIPE by default, so the write fails and `print!` panics).
#[allow(unsafe_code)]
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: the first thing main does, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
