//! The GPU backend: every kernel of a plan becomes a function of one `gpu.module` in MLIR's
//! text form ([`mlir`]), which the `mlir` feature lowers through MLIR/LLVM 22 (melior) to
//! PTX ([`ptx`]). [`abi`] is the contract with the CUDA runtime, which needs neither.

pub mod abi;
pub mod mlir;
#[cfg(feature = "mlir")]
pub mod ptx;

/// The GPU architectures `gdc build --target cuda --arch` accepts.
pub const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

/// Compiles every kernel of `plan` to one PTX module for `arch`.
#[cfg(feature = "mlir")]
pub fn compile(plan: &crate::plan::Plan, arch: &str) -> Result<abi::GpuProgram, String> {
    if !ARCHES.contains(&arch) {
        return Err(format!("unknown GPU architecture `{arch}`: gdc builds for {}", ARCHES.join(", ")));
    }
    let text = mlir::module_text(plan)?;
    let ptx = ptx::lower(&text, arch)?;
    let kernels = abi::plan_kernels(plan)?.into_iter().map(|(meta, _)| meta).collect();
    Ok(abi::GpuProgram { arch: arch.to_string(), ptx, kernels })
}
