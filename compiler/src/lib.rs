//! The gdc compiler: lowers a checked `.gd` file to IR, optimises it, schedules it into a
//! kernel plan, and runs plans on the float64 reference interpreter. `golden` replays the
//! reference trajectories of PyTorch and optax against it.

pub mod artifact;
pub mod chunks;
pub mod cpu;
pub mod golden;
pub mod gpu;
pub mod inputs;
pub mod interp;
pub mod ir;
pub mod lower;
#[cfg(feature = "mlir")]
pub mod mlir_context;
pub mod passes;
pub mod plan;

use gdc_dsl::{ast, Diagnostic};

/// Every stage of one compilation, for `gdc emit` and tests.
pub struct Compiled {
    pub ast: ast::File,
    /// Non-fatal diagnostics (warnings).
    pub warnings: Vec<Diagnostic>,
    pub ir: ir::Module,
    pub optimized: ir::Module,
    pub plan: plan::Plan,
}

/// Why a compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The source has errors; render them with `gdc_dsl::render`.
    #[error("the source has {} error(s)", .0.iter().filter(|d| d.is_error()).count())]
    Source(Vec<Diagnostic>),
    /// A compiler bug: the verifier or the scheduler rejected what an earlier stage made.
    #[error("internal compiler error: {0}")]
    Internal(String),
}

/// Compiles source text through every stage to a plan.
pub fn compile(source: &str) -> Result<Compiled, CompileError> {
    let (file, diags) = gdc_dsl::front_end(source);
    let Some(file) = file else { return Err(CompileError::Source(diags)) };
    let ir = lower::lower(&file).map_err(|d| CompileError::Source(diags.iter().cloned().chain([*d]).collect()))?;
    ir::verify::verify(&ir).map_err(|e| CompileError::Internal(format!("after lowering: {e}")))?;
    let mut optimized = ir.clone();
    passes::optimize(&mut optimized).map_err(CompileError::Internal)?;
    let plan = plan::build(optimized.clone()).map_err(CompileError::Internal)?;
    Ok(Compiled { ast: file, warnings: diags, ir, optimized, plan })
}
