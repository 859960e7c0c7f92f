//! `gdc build`: compile a `.gd` file into a versioned `.gdo` artifact (see docs/artifacts.md).

use clap::{Args, ValueEnum};
use gdc_compiler::artifact::{self, Artifact};
use gdc_compiler::gpu::abi::GpuProgram;
use gdc_compiler::gpu::GpuError;
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
    /// The GPU architecture for `--target cuda`: sm_80 or sm_90.
    #[arg(long, default_value = "sm_90")]
    arch: String,
    /// Where to write the artifact (default: FILE with the extension .gdo).
    #[arg(short, long)]
    output: Option<String>,
    /// Leave out the CPU's LLVM tier (x86-64-v3/v4 code for the flat kernels): the artifact's
    /// kernels then all run on Cranelift, compiled at load.
    #[arg(long)]
    no_native: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// JIT-compiled at load on the host CPU.
    Cpu,
    /// PTX for NVIDIA GPUs (`--arch`), through MLIR.
    Cuda,
}

impl From<Target> for artifact::Target {
    fn from(t: Target) -> Self {
        match t {
            Target::Cpu => artifact::Target::Cpu,
            Target::Cuda => artifact::Target::Cuda,
        }
    }
}

/// The GPU code of a plan for `arch`.
pub fn gpu_code(plan: &gdc_compiler::plan::Plan, arch: &str) -> Result<GpuProgram, GpuError> {
    gdc_compiler::gpu::check_arch(arch)?;
    #[cfg(feature = "mlir")]
    {
        gdc_compiler::gpu::compile(plan, arch)
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = plan;
        Err(GpuError::Setup(
            "this gdc was built without the `mlir` feature, so it cannot make GPU code; build gdc with it \
             (the default; run scripts/setup-mlir first) or pass an artifact built with `gdc build --target cuda`"
                .into(),
        ))
    }
}

/// [`gpu_code`], printing why it failed; `Err` carries the exit code (2 for the request or
/// the set-up, 101 for a compiler bug).
pub fn gpu_program(file: &str, plan: &gdc_compiler::plan::Plan, arch: &str) -> Result<GpuProgram, ExitCode> {
    gpu_code(plan, arch).map_err(|e| {
        eprintln!("error: cannot compile {file} for the GPU: {e}");
        match e {
            GpuError::Setup(_) => ExitCode::from(2),
            GpuError::Internal(_) => {
                eprintln!("This is a bug in gdc; please report it with the .gd file.");
                ExitCode::from(101)
            }
        }
    })
}

/// A program with GPU code compiled here from `source` (PTX for sm_80, which the driver also
/// runs on later GPUs), as `replay` and `verify` use for a `.gd` file on `--backend cuda`.
pub fn cuda_program(file: &str, source: &str) -> Result<gdc_runtime::Program, String> {
    let compiled = gdc_compiler::compile(source).map_err(|e| match e {
        gdc_compiler::CompileError::Source(d) => gdc_dsl::render(&d, file, source),
        other => other.to_string(),
    })?;
    let gpu = gpu_code(&compiled.plan, "sm_80").map_err(|e| e.to_string())?;
    let mut artifact = Artifact::from_compiled(&compiled, source, file, artifact::Target::Cuda);
    artifact.gpu = Some(gpu);
    gdc_runtime::Program::from_artifact(artifact).map_err(|e| e.to_string())
}

/// The CPU's LLVM tier for `plan` (nothing without the `mlir` feature); `Err` carries exit
/// code 101, a compiler bug.
pub fn native_code(
    file: &str,
    plan: &gdc_compiler::plan::Plan,
) -> Result<Vec<gdc_compiler::cpu::native::NativeLevel>, ExitCode> {
    #[cfg(feature = "mlir")]
    {
        gdc_compiler::cpu::llvm::compile(plan).map_err(|e| {
            eprintln!("error: the CPU's LLVM tier cannot compile {file}: {e}\nThis is a bug in gdc; please report it with the .gd file (`--no-native` builds without it).");
            ExitCode::from(101)
        })
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = (file, plan);
        Ok(Vec::new())
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
    let mut artifact = Artifact::from_compiled(&compiled, &source, &source_name, target);
    let (kernels, distinct) = match target {
        // The artifact carries the plan, and `Program::load` JIT-compiles it; compiling the
        // kernels here too proves they compile and times the whole path to machine code.
        artifact::Target::Cpu => match gdc_compiler::cpu::compile(&compiled.plan) {
            Ok(code) => (
                code.variants.iter().flat_map(|(i, u)| i.iter().chain(u)).filter(|k| k.is_some()).count(),
                format!(" ({} distinct)", code.functions),
            ),
            Err(e) => {
                eprintln!("error: the CPU backend cannot compile {}: {e}\nThis is a bug in gdc; please report it with the .gd file.", args.file);
                return Err(ExitCode::from(101));
            }
        },
        artifact::Target::Cuda => {
            let gpu = gpu_program(&args.file, &compiled.plan, &args.arch)?;
            let n = gpu.kernels.len();
            let distinct = gpu.kernels.iter().map(|k| &k.name).collect::<std::collections::HashSet<_>>().len();
            artifact.gpu = Some(gpu);
            (n, format!(" ({distinct} distinct)"))
        }
    };
    let to_machine_code = started.elapsed();
    let native_started = Instant::now();
    if !args.no_native {
        artifact.native = native_code(&args.file, &compiled.plan)?;
    }
    let native_time = native_started.elapsed();
    let native_note = if artifact.native.is_empty() {
        String::new()
    } else {
        let n = artifact.native[0].kernels.iter().flatten().collect::<std::collections::HashSet<_>>().len();
        let levels: Vec<&str> = artifact.native.iter().map(|n| n.level.name()).collect();
        format!(
            ", LLVM tier {} ({n} function(s) each) in {:.1} ms",
            levels.join(" and "),
            native_time.as_secs_f64() * 1e3
        )
    };
    let bytes = artifact.to_bytes().len();
    artifact.write(&out).map_err(|e| {
        eprintln!("error: cannot write the artifact: {e}");
        ExitCode::from(2)
    })?;
    println!(
        "built {out} ({}, target {target}{}, {bytes} bytes, {kernels} kernel(s){distinct} to machine code in {:.1} ms{native_note}, {:.1} ms in all)",
        artifact.optimizer,
        artifact.gpu.as_ref().map(|g| format!(" {}", g.arch)).unwrap_or_default(),
        to_machine_code.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
