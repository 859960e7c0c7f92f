//! A compiled optimizer, ready to bind: its kernel plan and, for the CPU, its machine code.

use crate::RuntimeError;
use gdc_compiler::cpu::CpuProgram;
use gdc_compiler::plan::Plan;
use std::sync::Arc;

/// A compiled optimizer. Cheap to clone; many optimizers may share one program.
#[derive(Clone)]
pub struct Program {
    pub(crate) inner: Arc<ProgramInner>,
}

pub(crate) struct ProgramInner {
    pub source: String,
    pub plan: Arc<Plan>,
    pub cpu: Arc<CpuProgram>,
}

impl Program {
    /// Compiles `.gd` source for the CPU: front end, passes, kernel plan, machine code.
    pub fn compile(source: &str) -> Result<Program, RuntimeError> {
        let compiled = gdc_compiler::compile(source).map_err(|e| match e {
            gdc_compiler::CompileError::Source(d) => RuntimeError::Compile(gdc_dsl::render(&d, "<optimizer>", source)),
            other => RuntimeError::Compile(other.to_string()),
        })?;
        Program::from_plan(source, compiled.plan)
    }

    pub(crate) fn from_plan(source: &str, plan: Plan) -> Result<Program, RuntimeError> {
        let cpu = gdc_compiler::cpu::compile(&plan).map_err(RuntimeError::Codegen)?;
        Ok(Program {
            inner: Arc::new(ProgramInner { source: source.to_string(), plan: Arc::new(plan), cpu: Arc::new(cpu) }),
        })
    }

    /// The optimizer's name (`optimizer adamw`).
    pub fn name(&self) -> &str {
        &self.inner.plan.module.name
    }

    /// The kernel plan every backend runs.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }
}
