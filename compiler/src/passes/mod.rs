//! The optimisation pipeline: one pass per file, each a plain function over the module,
//! run in the order of `PIPELINE`, with the verifier after every pass.

pub mod const_fold;
pub mod cse;
pub mod dce;
pub mod eigh_order;
pub mod fold_transpose;
pub mod simplify;
pub mod symmetry;

use crate::ir::{verify::verify, Module};

/// A pass: a name (for `--print-after` style debugging and errors) and its function.
pub type Pass = (&'static str, fn(&mut Module));

/// The passes in the order they run. Simplification exposes constants and constant
/// folding exposes simplifications, so the pair runs twice before CSE and DCE.
pub const PIPELINE: &[Pass] = &[
    ("const-fold", const_fold::run),
    ("simplify", simplify::run),
    ("const-fold", const_fold::run),
    ("simplify", simplify::run),
    ("fold-transpose", fold_transpose::run),
    ("cse", cse::run),
    ("eigh-order", eigh_order::run),
    ("symmetry", symmetry::run),
    ("dce", dce::run),
];

/// Runs the whole pipeline, verifying the module after each pass. A verifier failure is a
/// compiler bug: the error names the pass after which it happened.
pub fn optimize(m: &mut Module) -> Result<(), String> {
    for (name, pass) in PIPELINE {
        pass(m);
        verify(m).map_err(|e| format!("after pass `{name}`: {e}"))?;
    }
    Ok(())
}
