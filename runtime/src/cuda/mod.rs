//! The CUDA backend (feature `cuda`): PTX from a `--target cuda` artifact, launched through
//! the driver API ([`driver`] finds it at run time, so a machine without a GPU still builds
//! and runs the CPU backend) by the [`engine`].

mod driver;
mod engine;

pub(crate) use engine::CudaEngine;
