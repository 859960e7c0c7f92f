//! The anisotropy experiment (Zhang, Moniri, Nagwekar et al., ICML 2025): a two-layer linear
//! model learns a planted k-dimensional feature subspace from anisotropic inputs, trained by
//! compiled gdc optimizers; steps to a target excess risk and the final subspace distance are
//! measured across the inputs' condition number κ.

pub mod experiment;
pub mod linalg;
pub mod problem;
pub mod report;
pub mod train;
