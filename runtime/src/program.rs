//! A compiled optimizer, ready to bind: its kernel plan and, for the CPU, its machine code.

use crate::RuntimeError;
use gdc_compiler::artifact::{Artifact, ArtifactError, Target};
use gdc_compiler::cpu::CpuProgram;
use gdc_compiler::plan::Plan;
use std::path::Path;
use std::sync::Arc;

/// A compiled optimizer. Cheap to clone; many optimizers may share one program.
#[derive(Clone)]
pub struct Program {
    pub(crate) inner: Arc<ProgramInner>,
}

pub(crate) struct ProgramInner {
    pub source: String,
    /// Ties checkpoints to the program (`gdc_compiler::artifact::program_hash`).
    pub hash: String,
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
            inner: Arc::new(ProgramInner {
                source: source.to_string(),
                hash: gdc_compiler::artifact::program_hash(source, Target::Cpu.name()),
                plan: Arc::new(plan),
                cpu: Arc::new(cpu),
            }),
        })
    }

    /// Loads a `.gdo` artifact built by `gdc build --target cpu`: checks its header,
    /// checksum, format and compiler version, recompiles its source and checks the plan and
    /// schemas it carries are exactly what this compiler makes, then compiles machine code.
    pub fn load(path: impl AsRef<Path>) -> Result<Program, RuntimeError> {
        let artifact = Artifact::read(path)?;
        if artifact.target != Target::Cpu.name() {
            return Err(ArtifactError::UnknownTarget(artifact.target).into());
        }
        let compiled = artifact.validate()?;
        Program::from_plan(&artifact.source, compiled.plan)
    }

    /// The program's hash: format and compiler version, target and source.
    pub fn hash(&self) -> &str {
        &self.inner.hash
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
