//! `gdc build`: compile a `.gd` file into a versioned `.gdo` artifact (see docs/artifacts.md).

use clap::{Args, ValueEnum};
use gdc_compiler::artifact::{self, Artifact};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// The arguments of `gdc build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The optimizer source file.
    file: String,
    /// The backend the artifact is for.
    #[arg(long, value_enum, default_value = "cpu")]
    target: Target,
    /// Where to write the artifact (default: FILE with the extension .gdo).
    #[arg(short, long)]
    output: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// JIT-compiled at load on the host CPU.
    Cpu,
}

impl From<Target> for artifact::Target {
    fn from(t: Target) -> Self {
        match t {
            Target::Cpu => artifact::Target::Cpu,
        }
    }
}

/// Builds and writes the artifact. Exit 0 on success, 1 when the source has errors, 2 when the
/// input cannot be read or the output cannot be written, 101 on a compiler bug.
pub fn run(args: &BuildArgs) -> Result<ExitCode, ExitCode> {
    let started = Instant::now();
    let target = artifact::Target::from(args.target);
    let out = match &args.output {
        Some(o) => o.clone(),
        None => Path::new(&args.file).with_extension("gdo").display().to_string(),
    };
    if Path::new(&out) == Path::new(&args.file) {
        eprintln!("error: the output {out} would overwrite the source; name another with -o");
        return Err(ExitCode::from(2));
    }
    let source = crate::read(&args.file)?;
    let compiled = crate::build(&args.file, &source, 1)?;
    let source_name = Path::new(&args.file).file_name().map_or(args.file.clone(), |n| n.to_string_lossy().into_owned());
    let artifact = Artifact::from_compiled(&compiled, &source, &source_name, target);
    // The artifact carries the plan, and `Program::load` JIT-compiles it; compiling the
    // kernels here too proves they compile and times the whole path to machine code.
    let kernels = match gdc_compiler::cpu::compile(&compiled.plan) {
        Ok(code) => code.variants.iter().flat_map(|(i, u)| i.iter().chain(u)).filter(|k| k.is_some()).count(),
        Err(e) => {
            eprintln!("error: the CPU backend cannot compile {}: {e}\nThis is a bug in gdc; please report it with the .gd file.", args.file);
            return Err(ExitCode::from(101));
        }
    };
    let to_machine_code = started.elapsed();
    let bytes = artifact.to_bytes().len();
    artifact.write(&out).map_err(|e| {
        eprintln!("error: cannot write the artifact: {e}");
        ExitCode::from(2)
    })?;
    println!(
        "built {out} ({}, target {target}, {bytes} bytes, {kernels} kernel(s) to machine code in {:.1} ms, {:.1} ms in all)",
        artifact.optimizer,
        to_machine_code.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
