//! The MLIR context the backends that lower through MLIR/LLVM 22 share (the GPU's PTX, the
//! CPU's LLVM tier): every dialect loaded, every pass and LLVM translation registered.

use melior::dialect::DialectRegistry;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};
use melior::Context;
use std::sync::Once;

static REGISTER_PASSES: Once = Once::new();

/// A fresh context ready to parse, lower and translate any module the backends print.
pub fn new_context() -> Context {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    REGISTER_PASSES.call_once(register_all_passes);
    register_all_llvm_translations(&context);
    context
}
