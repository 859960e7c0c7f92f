//! The GPU backend: every kernel of a plan becomes a function of one `gpu.module` in MLIR's
//! text form ([`mlir`]), which the `mlir` feature lowers through MLIR/LLVM 22 (melior) to
//! PTX ([`ptx`]). [`abi`] is the contract with the CUDA runtime, which needs neither.

pub mod abi;
pub mod mlir;
#[cfg(feature = "mlir")]
pub mod ptx;

/// The GPU architectures `gdc build --target cuda --arch` accepts.
pub const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

/// Why GPU code could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The request or the machine: an unknown architecture, no libdevice, a gdc built
    /// without the `mlir` feature. The message says what to do.
    #[error("{0}")]
    Setup(String),
    /// A compiler bug: the plan's kernels did not become valid PTX.
    #[error("{0}")]
    Internal(String),
}

/// Refuses an architecture gdc does not build for.
pub fn check_arch(arch: &str) -> Result<(), GpuError> {
    if ARCHES.contains(&arch) {
        Ok(())
    } else {
        Err(GpuError::Setup(format!("unknown GPU architecture `{arch}`: gdc builds for {}", ARCHES.join(", "))))
    }
}

/// bf16 state is stored as bfloat16 on the CPU only; the GPU kernels would read it as
/// float32, so a program with one is refused for the GPU rather than run differently.
pub fn refuse_bf16(plan: &crate::plan::Plan) -> Result<(), GpuError> {
    match plan.module.states.iter().find(|s| s.bf16) {
        Some(s) => Err(GpuError::Setup(format!(
            "state `{}` is bf16, which the GPU backend does not store yet: declare it without `bf16` for --target cuda",
            s.name
        ))),
        None => Ok(()),
    }
}

/// Compiles every kernel of `plan` to one PTX module for `arch`.
#[cfg(feature = "mlir")]
pub fn compile(plan: &crate::plan::Plan, arch: &str) -> Result<abi::GpuProgram, GpuError> {
    check_arch(arch)?;
    refuse_bf16(plan)?;
    let (names, functions) = mlir::kernel_functions(plan).map_err(GpuError::Internal)?;
    let ptx = ptx::lower(&mlir::module_of(&functions), arch)?;
    let kernels =
        abi::kernels_named(plan, names).map_err(GpuError::Internal)?.into_iter().map(|(meta, _)| meta).collect();
    Ok(abi::GpuProgram { arch: arch.to_string(), ptx, kernels })
}
