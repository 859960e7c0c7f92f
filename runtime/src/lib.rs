//! The gdc runtime: loads or compiles an optimizer (`Program`), binds it to a model's
//! parameters (`Optimizer`), owns their state and applies one step per training step, on
//! plain `f32` memory any framework can hand over.
//!
//! Backends: `cpu` runs the plan's kernels as Cranelift machine code over a persistent pool
//! of worker threads; `interp` runs the float64 reference interpreter (exact, slow), for
//! checking.

pub mod bench;
pub mod checkpoint;
mod cpu;
mod linalg;
mod optimizer;
mod program;
pub mod replay;

pub use gdc_compiler::interp::InterpError;
pub use gdc_compiler::ir::HyperTy;
pub use optimizer::{Backend, Optimizer, Options};
pub use program::Program;

/// What a parameter is to the model; policies and muP route and scale by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// A hidden weight matrix.
    Hidden,
    Embedding,
    Output,
    Input,
    Bias,
    Norm,
    /// Not said.
    #[default]
    Other,
}

/// A parameter as the training code describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> ParamSpec {
        ParamSpec { name: name.into(), shape: shape.to_vec(), role: Role::Other }
    }

    pub fn with_role(mut self, role: Role) -> ParamSpec {
        self.role = role;
        self
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Everything that can go wrong between training code and the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The optimizer source has errors (rendered, with carets and hints).
    #[error("the optimizer does not compile:\n{0}")]
    Compile(String),
    #[error("parameter names must be unique, `{0}` appears twice")]
    DuplicateParam(String),
    /// Binding, stepping or a hyperparameter: wrong counts, lengths, names, types or ranges.
    #[error(transparent)]
    Step(#[from] InterpError),
    #[error("an optimizer needs at least one worker thread")]
    NoThreads,
    /// The CPU backend could not compile the plan (a compiler bug or an unsupported kernel).
    #[error("the CPU backend cannot compile this optimizer: {0}")]
    Codegen(String),
    /// A `.gdo` artifact that cannot be loaded: unreadable, truncated, corrupt, of another
    /// format or compiler version, or stale.
    #[error(transparent)]
    Artifact(#[from] gdc_compiler::artifact::ArtifactError),
    /// A checkpoint that cannot be saved or loaded, or belongs to another program or
    /// parameter list.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// A checkpoint that matches the program and parameters but not the state they need.
    #[error("checkpoint {path}: {what}")]
    CheckpointState { path: String, what: String },
    #[error("{0} is not supported on the interpreter backend; use the cpu backend")]
    Unsupported(&'static str),
}
