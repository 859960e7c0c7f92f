//! Compiles the CPU's LLVM tier at `gdc build` (feature `mlir`): the flat kernels of a plan,
//! as [`super::mlir`] prints them for each x86-64 level, lowered to the LLVM dialect and
//! compiled by MLIR's execution engine into one ELF object per level, which the
//! artifact carries and [`super::native::load`] maps where the CPU has the level. The
//! functions' own target CPU and features decide the instructions, not the building
//! machine's. The object is loaded here once, so a build never writes code its runtime
//! cannot load.

use super::mlir::module_texts;
use super::native::{hex, Level, NativeLevel};
use crate::plan::Plan;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;
use melior::ExecutionEngine;

/// From the kernels' dialects to the LLVM dialect.
const PIPELINE: &str = "builtin.module(convert-scf-to-cf,convert-vector-to-llvm,convert-math-to-llvm,\
                        convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)";

/// Compiles `plan`'s flat kernels for every level; empty when no kernel qualifies.
pub fn compile(plan: &Plan) -> Result<Vec<NativeLevel>, String> {
    let (texts, kernels) = module_texts(plan, &Level::ALL)?;
    let Some(first) = kernels.iter().flatten().next() else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (level, text) in Level::ALL.into_iter().zip(&texts) {
        let object = object_of(text, first)?;
        let loaded =
            super::native::load(&object).map_err(|e| format!("the {} object does not load: {e}", level.name()))?;
        if let Some(missing) = kernels.iter().flatten().find(|n| loaded.function(n).is_none()) {
            return Err(format!("the {} object has no function {missing}", level.name()));
        }
        out.push(NativeLevel { level, object: hex(&object), kernels: kernels.clone() });
    }
    Ok(out)
}

/// The ELF object of MLIR module `text`; `first` is one of its functions.
fn object_of(text: &str, first: &str) -> Result<Vec<u8>, String> {
    let context = crate::mlir_context::new_context();
    let mut module = Module::parse(&context, text).ok_or_else(|| {
        "the CPU kernels' MLIR does not parse or verify (see `gdc emit --stage cpu-mlir`)".to_string()
    })?;
    let pm = PassManager::new(&context);
    parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE)
        .map_err(|e| format!("the CPU pass pipeline is not valid: {e}"))?;
    pm.run(&mut module).map_err(|e| format!("lowering the CPU kernels to the LLVM dialect failed: {e}"))?;
    // No LLVM IR optimisation: the kernels come out of `mlir` already as a hand-written loop
    // would be (invariants hoisted, one vector body, a scalar tail), and at -O2 LLVM only
    // vectorised and unrolled the scalar tails behind runtime alias checks, which made the
    // build four times slower (Muon: 560 ms against 150 ms) and no step faster. Code
    // generation (instruction selection, register allocation) still optimises. No PIC:
    // constants are reached RIP-relative either way, and PIC asked for a GOT.
    let engine = ExecutionEngine::new(&module, 0, &[], true, false);
    // Compilation is lazy: the first lookup compiles the whole module.
    if engine.lookup(first).is_null() {
        return Err(format!("LLVM did not compile the CPU kernels ({first} is missing)"));
    }
    let dir = std::env::temp_dir().join(format!("gdc-native-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("kernels.o");
    engine.dump_to_object_file(&path.display().to_string());
    let bytes = std::fs::read(&path).map_err(|e| format!("the object LLVM wrote cannot be read: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// A number no other call in this process returns.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
