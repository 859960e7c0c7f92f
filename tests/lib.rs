//! The one table of example optimizers that drives the end-to-end tests: each optimizer's
//! file, its golden cases, and how the shared battery exercises it.

use std::path::PathBuf;

pub struct Entry {
    /// `examples/optimizers/{name}.gd`.
    pub name: &'static str,
    /// `tests/golden/{case}.json`, produced by the reference implementation.
    pub cases: &'static [&'static str],
    /// The optimizer only updates matrices (it has no `update(p, g)` for any shape).
    pub matrix_only: bool,
    /// A learning rate at which it makes steady progress on the battery's quadratic.
    pub lr: f64,
}

pub const OPTIMIZERS: &[Entry] = &[
    Entry { name: "sgd", cases: &["sgd-plain", "sgd-nesterov", "sgd-dampened"], matrix_only: false, lr: 0.05 },
    Entry { name: "adam", cases: &["adam-default", "adam-l2"], matrix_only: false, lr: 0.05 },
    Entry { name: "adamw", cases: &["adamw-default", "adamw-optax"], matrix_only: false, lr: 0.05 },
    Entry { name: "adagrad", cases: &["adagrad-default"], matrix_only: false, lr: 0.5 },
    Entry { name: "rmsprop", cases: &["rmsprop-plain", "rmsprop-centered"], matrix_only: false, lr: 0.01 },
    Entry { name: "adamax", cases: &["adamax-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "nadam", cases: &["nadam-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "radam", cases: &["radam-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "adafactor", cases: &["adafactor-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "lion", cases: &["lion-default"], matrix_only: false, lr: 0.005 },
    Entry { name: "lamb", cases: &["lamb-default"], matrix_only: false, lr: 0.02 },
    Entry { name: "schedule_free_adamw", cases: &["schedule_free_adamw-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "muon", cases: &["muon-default", "muon-f32"], matrix_only: true, lr: 0.02 },
    Entry { name: "shampoo", cases: &["shampoo-default"], matrix_only: false, lr: 1.0 },
    Entry { name: "soap", cases: &["soap-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "sgd_wsd", cases: &["sgd_wsd-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "adamw_clip_cosine", cases: &["adamw_clip_cosine-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "adamw_ema", cases: &["adamw_ema-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "adamw_mup", cases: &["adamw_mup-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "muon_adamw", cases: &["muon_adamw-default"], matrix_only: false, lr: 0.02 },
    Entry { name: "muon_adamw_clip", cases: &["muon_adamw_clip-torch"], matrix_only: false, lr: 0.02 },
    Entry { name: "kfac", cases: &["kfac-default"], matrix_only: true, lr: 0.05 },
    Entry { name: "sophia_g", cases: &["sophia_g-default"], matrix_only: false, lr: 0.05 },
    Entry { name: "sm3", cases: &["sm3-optax"], matrix_only: false, lr: 0.05 },
    Entry { name: "lookahead_adam", cases: &["lookahead_adam-optax"], matrix_only: false, lr: 0.05 },
    Entry { name: "cautious_adamw", cases: &["cautious_adamw-authors"], matrix_only: false, lr: 0.05 },
    Entry { name: "schedule_free_sgd", cases: &["schedule_free_sgd-wrapper"], matrix_only: false, lr: 0.05 },
    Entry { name: "prodigy", cases: &["prodigy-optax"], matrix_only: false, lr: 1.0 },
    Entry { name: "grafted_shampoo", cases: &["grafted_shampoo-distributed"], matrix_only: false, lr: 0.05 },
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn source(name: &str) -> String {
    let path = root().join("examples/optimizers").join(format!("{name}.gd"));
    gdc_dsl::policy::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Compiles an example optimizer, panicking with its rendered diagnostics on failure.
pub fn compile(name: &str) -> gdc_compiler::Compiled {
    let src = source(name);
    gdc_compiler::compile(&src).unwrap_or_else(|e| match e {
        gdc_compiler::CompileError::Source(d) => panic!("{}", gdc_dsl::render(&d, name, &src)),
        other => panic!("{name}: {other}"),
    })
}

pub fn case_path(case: &str) -> String {
    root().join("tests/golden").join(format!("{case}.json")).display().to_string()
}

/// Deterministic values in [-1, 1) (xorshift), the same for a seed on every machine.
pub use gdc_runtime::verify::noise;

pub mod random;
