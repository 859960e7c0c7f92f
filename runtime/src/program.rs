//! A compiled optimizer, ready to bind: its kernel plan, its CPU machine code (always: it is
//! cheap, so every program runs on the CPU; from an artifact, the LLVM tier's code where it
//! carries one for this CPU) and, from a `--target cuda` artifact, its PTX.

use crate::RuntimeError;
use gdc_compiler::artifact::{Artifact, ArtifactError, Target};
use gdc_compiler::cpu::CpuProgram;
use gdc_compiler::gpu::abi::GpuProgram;
use gdc_compiler::plan::locality::Locality;
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
    /// The GPU code of a cuda artifact.
    pub gpu: Option<Arc<GpuProgram>>,
    /// The LLVM tier's code the program came with (every level, run here or not), so saving
    /// it again keeps it.
    pub native_code: Vec<gdc_compiler::cpu::native::NativeLevel>,
}

impl Program {
    /// Compiles the `.gd` file at `path`; a policy's `use`d files are read from beside it.
    /// Diagnostics are rendered under the file's name.
    pub fn compile_file(path: impl AsRef<std::path::Path>) -> Result<Program, RuntimeError> {
        let source = gdc_dsl::policy::load(path.as_ref()).map_err(RuntimeError::Compile)?;
        Program::compile_named(&source, &path.as_ref().display().to_string())
    }

    /// Compiles `.gd` source for the CPU: front end, passes, kernel plan, machine code.
    pub fn compile(source: &str) -> Result<Program, RuntimeError> {
        Program::compile_named(source, "<optimizer>")
    }

    fn compile_named(source: &str, file_name: &str) -> Result<Program, RuntimeError> {
        let compiled = gdc_compiler::compile(source).map_err(|e| match e {
            gdc_compiler::CompileError::Source(d) => RuntimeError::Compile(gdc_dsl::render(&d, file_name, source)),
            other => RuntimeError::Compile(other.to_string()),
        })?;
        let hash = gdc_compiler::artifact::program_hash(source, Target::Cpu.name());
        Program::from_plan(source, hash, compiled.plan, None, &[])
    }

    pub(crate) fn from_plan(
        source: &str,
        hash: String,
        plan: Plan,
        gpu: Option<GpuProgram>,
        native: &[gdc_compiler::cpu::native::NativeLevel],
    ) -> Result<Program, RuntimeError> {
        let cpu = gdc_compiler::cpu::compile_with(&plan, native).map_err(RuntimeError::Codegen)?;
        Ok(Program {
            inner: Arc::new(ProgramInner {
                source: source.to_string(),
                hash,
                plan: Arc::new(plan),
                cpu: Arc::new(cpu),
                gpu: gpu.map(Arc::new),
                native_code: native.to_vec(),
            }),
        })
    }

    /// Loads a `.gdo` artifact built by `gdc build` (`--target cpu` or `cuda`): checks its
    /// header, checksum, format and compiler version, then as [`Program::from_artifact`].
    pub fn load(path: impl AsRef<Path>) -> Result<Program, RuntimeError> {
        Program::from_artifact(Artifact::read(path)?)
    }

    /// A program from an artifact in memory: recompiles its source and checks that the
    /// plan, schemas and (cuda) kernel table it carries are exactly what this compiler
    /// makes, then compiles CPU machine code. A cuda artifact keeps its PTX for the cuda
    /// backend, and runs on the CPU too. The program hash is the artifact's (it names the
    /// target), so checkpoints tie to it.
    pub fn from_artifact(artifact: Artifact) -> Result<Program, RuntimeError> {
        if Target::from_name(&artifact.target).is_none() {
            return Err(ArtifactError::UnknownTarget(artifact.target).into());
        }
        let compiled = artifact.validate()?;
        Program::from_plan(&artifact.source, artifact.program_hash, compiled.plan, artifact.gpu, &artifact.native)
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

    /// How the program can step a shard of the leading dimension of a parameter of
    /// `spec`'s shape and role (see [`gdc_compiler::plan::locality::locality`]): alone
    /// (elementwise), alone with its whole-tensor reductions combined across the shards
    /// ([`crate::Optimizer::step_combined`]), or only whole, in one place. A batch of
    /// matrices is stepped whole. A parameter the program cannot bind is an error, as
    /// binding it would be.
    pub fn locality(&self, spec: &crate::ParamSpec) -> Result<Locality, RuntimeError> {
        let plan = self.plan();
        let variant = gdc_compiler::interp::route(&plan.module, &spec.name, &spec.shape, spec.role)
            .map_err(RuntimeError::Step)?;
        if plan.variants[variant].pattern == gdc_compiler::ir::Pattern::Batched {
            return Ok(Locality::Whole);
        }
        Ok(gdc_compiler::plan::locality::locality(plan, variant))
    }

    /// Whether the program folds a value over every parameter of a step (`global_norm`,
    /// a reduction `AcrossParams`): stepping parameters apart (on several ranks) changes
    /// that value unless the ranks combine their parts.
    pub fn reduces_across_params(&self) -> bool {
        let m = &self.plan().module;
        m.funcs().iter().any(|(_, f)| f.insts.iter().any(|i| matches!(i.op, gdc_compiler::ir::Op::AcrossParams(_))))
    }

    /// The level of the CPU's LLVM tier this program's kernels run at here, and how many
    /// kernel items run on it (the rest on Cranelift); `None` when none do (a program
    /// compiled from source, an artifact built without it, a CPU without AVX2, or
    /// `GDC_NO_NATIVE=1`).
    pub fn native(&self) -> Option<(gdc_compiler::cpu::native::Level, usize)> {
        self.inner.cpu.native
    }

    /// The LLVM tier's code the program came with, every level (what an artifact of it carries).
    pub fn native_code(&self) -> &[gdc_compiler::cpu::native::NativeLevel] {
        &self.inner.native_code
    }

    /// The GPU code, for a program loaded from a `--target cuda` artifact.
    pub fn gpu(&self) -> Option<&GpuProgram> {
        self.inner.gpu.as_deref()
    }
}
