//! The gdc runtime: loads or compiles an optimizer (`Program`), binds it to a model's
//! parameters (`Optimizer`), owns their state and applies one step per training step, on
//! plain `f32` memory any framework can hand over.
//!
//! Backends: `cpu` runs the plan's kernels as Cranelift machine code over a persistent pool
//! of worker threads; `cuda` (feature `cuda`, on by default) launches the PTX of a
//! `gdc build --target cuda` artifact on an NVIDIA GPU, through the driver library found at
//! run time (no CUDA toolkit, MLIR or LLVM is linked: a machine without a GPU reports
//! [`RuntimeError::NoGpu`]); `interp` runs the float64 reference interpreter (exact, slow),
//! for checking. Every backend shares the host's scalar arithmetic (`shared`), so they
//! differ only in how kernels and library calls run.

pub mod bench;
#[cfg(target_arch = "x86_64")]
mod bf16_gemm;
pub mod checkpoint;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod linalg;
mod optimizer;
mod program;
pub mod replay;
mod shared;
pub mod verify;

/// The CUDA bindings the device API ([`Optimizer::step_device`]) takes buffers of.
#[cfg(feature = "cuda")]
pub use cudarc;

pub use gdc_compiler::interp::{InterpError, Member};
pub use gdc_compiler::ir::{HyperTy, ReduceKind};
pub use gdc_compiler::plan::locality::Locality;
pub use optimizer::{stochastic_bf16, Backend, Inputs, NonFinite, Optimizer, Options};
pub use program::Program;
pub use shared::{Combine, Partial};

/// What a parameter is to the model; policies route by it, and updates read it
/// (`has_role(bias, norm)`) for decay masks and muP.
pub use gdc_compiler::ir::Role;

/// A parameter as the training code describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
    /// muP: the parameter's shape in the base model (the one whose hyperparameters were
    /// tuned); `width_mult` and `inf_dims` are measured against it. `None`: no muP scaling.
    pub base_shape: Option<Vec<usize>>,
    /// A shard of a larger parameter's leading dimension, which may have no rows: the whole
    /// parameter's leading extent (see [`Optimizer::step_combined`]).
    pub shard: Option<usize>,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> ParamSpec {
        ParamSpec { name: name.into(), shape: shape.to_vec(), role: Role::Other, base_shape: None, shard: None }
    }

    /// Marks the parameter as a shard of the leading dimension of a larger one, whose
    /// extent is `whole_rows`: it may be empty (no rows on this rank) and still take part in
    /// the reductions combined across ranks; its shape scalars (`numel`, `rows`, muP's) are
    /// the whole parameter's.
    pub fn as_shard(mut self, whole_rows: usize) -> ParamSpec {
        self.shard = Some(whole_rows);
        self
    }

    pub fn with_role(mut self, role: Role) -> ParamSpec {
        self.role = role;
        self
    }

    /// muP: the parameter's shape in the base model (same rank, no zero dimension).
    pub fn with_base_shape(mut self, base: &[usize]) -> ParamSpec {
        self.base_shape = Some(base.to_vec());
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
    /// A feature the chosen backend does not have yet (the message says which, and what
    /// to use instead).
    #[error("{0}")]
    NotOnBackend(&'static str),
    /// [`Optimizer::step_combined`] of parameters it cannot step by shards, off the CPU
    /// backend, or whose `combine` failed (the message says which).
    #[error("stepping shards with reductions combined across ranks: {0}")]
    Combine(String),
    /// `swap_state` of a state that cannot stand in for the parameters.
    #[error("cannot swap state `{name}` with the parameters: {why}")]
    SwapState { name: String, why: String },
    /// An operation of the device API on an optimizer of another backend.
    #[error("{0} needs an optimizer on the cuda backend (`Backend::Cuda`)")]
    NeedsCuda(&'static str),
    /// The cuda backend cannot run here: no driver library, no device, or a driver that
    /// does not initialise. The message says what was looked for.
    #[error("no usable NVIDIA GPU: {0}")]
    NoGpu(String),
    /// The runtime was compiled without its `cuda` feature.
    #[error(
        "this gdc runtime was built without the `cuda` feature, so it has no cuda backend;          rebuild it with `--features cuda`, or use the cpu backend"
    )]
    CudaNotBuilt,
    /// A program without GPU code (compiled from source, or a `--target cpu` artifact) bound
    /// to the cuda backend.
    #[error(
        "optimizer `{0}` has no GPU code: build it with `gdc build FILE.gd --target cuda -o FILE.gdo` \
         and load that artifact (or use the cpu backend)"
    )]
    NoGpuCode(String),
    /// The artifact's PTX targets a newer GPU than the device.
    #[error(
        "the artifact's GPU code is for {arch} but the device is {device}: rebuild it with \
         `gdc build FILE.gd --target cuda --arch ARCH` for this GPU's architecture or older"
    )]
    GpuArch { arch: String, device: String },
    /// [`Optimizer::step_device`] on an optimizer with a batched parameter
    /// (`update(p: [..., rows, cols], g)` on a parameter of rank 3 or more).
    #[error(
        "batched parameter `{0}`: step_device cannot split device buffers into its matrices yet; \
         use step() with host slices on CUDA for now"
    )]
    BatchedDevice(String),
    /// A CUDA driver or cuBLAS call failed; the message says which and on what.
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// A gradient held NaN or infinity under [`NonFinite::Error`]; nothing was changed.
    #[error(
        "step {step}: the gradient of `{param}` holds {count} non-finite element(s) (NaN or infinity){}; \
         nothing was changed (parameters, state and step count are as before). Look for the cause upstream \
         (a loss that overflowed, a division by zero, a learning rate too high), or skip such steps with \
         `set_non_finite(NonFinite::SkipStep)`",
        if *others > 0 { format!(", and {others} more parameter(s) do too ({total} in all)") } else { String::new() }
    )]
    NonFiniteGradient { param: String, count: u64, total: u64, others: usize, step: u64 },
}
