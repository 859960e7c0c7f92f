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

/// Compiles every kernel of `plan` to one PTX module for `arch`.
#[cfg(feature = "mlir")]
pub fn compile(plan: &crate::plan::Plan, arch: &str) -> Result<abi::GpuProgram, GpuError> {
    check_arch(arch)?;
    let text = mlir::module_text(plan).map_err(GpuError::Internal)?;
    let ptx = ptx::lower(&text, arch)?;
    let kernels = abi::plan_kernels(plan).map_err(GpuError::Internal)?.into_iter().map(|(meta, _)| meta).collect();
    Ok(abi::GpuProgram { arch: arch.to_string(), ptx, kernels })
}
