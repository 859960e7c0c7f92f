//! Compiles the CPU's LLVM tier at `gdc build` (feature `mlir`): the flat kernels of a plan,
//! as [`super::mlir`] prints them for each x86-64 level, lowered to the LLVM dialect and
//! compiled by MLIR's execution engine at `-O3` into one ELF object per level, which the
//! artifact carries and [`super::native::load`] maps where the CPU has the level. The
//! functions' own target CPU and features decide the instructions, not the building
//! machine's. The object is loaded here once, so a build never writes code its runtime
//! cannot load.

use super::mlir::kernel_text;
use super::native::{hex, Level, NativeLevel};
use crate::plan::{Item, Plan};
use melior::dialect::DialectRegistry;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::{Context, ExecutionEngine};
use std::collections::HashMap;
use std::sync::Once;

/// From the kernels' dialects to the LLVM dialect.
const PIPELINE: &str = "builtin.module(convert-scf-to-cf,convert-vector-to-llvm,convert-math-to-llvm,\
                        convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)";

static REGISTER_PASSES: Once = Once::new();

/// The MLIR module of `plan`'s kernels at `level` and, per kernel item (in (variant, init
/// then update, item) order), the name of its function; kernels of identical text share one.
pub fn module_text(plan: &Plan, level: Level) -> Result<(String, Vec<Option<String>>), String> {
    let mut names = Vec::new();
    let mut by_body: HashMap<String, String> = HashMap::new();
    let mut text = String::from("module {\n");
    let m = &plan.module;
    for (vi, (vp, vm)) in plan.variants.iter().zip(&m.variants).enumerate() {
        for (init, fp, func) in [(true, &vp.init, &vm.init), (false, &vp.update, &vm.update)] {
            for (ii, item) in fp.items.iter().enumerate() {
                let Item::Kernel(k) = item else { continue };
                let mut abi = super::abi::layout(func, k)?;
                super::abi::mark_bf16(&mut abi, m);
                let Some(body) = kernel_text(func, k, &abi, level, "gdc_kernel") else {
                    names.push(None);
                    continue;
                };
                if let Some(first) = by_body.get(&body) {
                    names.push(Some(first.clone()));
                    continue;
                }
                let name = format!("gdc_v{vi}_{}_{ii}", if init { "init" } else { "update" });
                text.push_str(&body.replacen("@gdc_kernel(", &format!("@{name}("), 1));
                by_body.insert(body, name.clone());
                names.push(Some(name));
            }
        }
    }
    text.push_str("}\n");
    Ok((text, names))
}

/// Compiles `plan`'s flat kernels for every level; empty when no kernel qualifies.
pub fn compile(plan: &Plan) -> Result<Vec<NativeLevel>, String> {
    let mut out = Vec::new();
    for level in Level::ALL {
        let (text, kernels) = module_text(plan, level)?;
        let Some(first) = kernels.iter().flatten().next() else { return Ok(out) };
        let object = object_of(&text, first)?;
        let loaded =
            super::native::load(&object).map_err(|e| format!("the {} object does not load: {e}", level.name()))?;
        if let Some(missing) = kernels.iter().flatten().find(|n| loaded.function(n).is_none()) {
            return Err(format!("the {} object has no function {missing}", level.name()));
        }
        out.push(NativeLevel { level, object: hex(&object), kernels });
    }
    Ok(out)
}

/// The ELF object of MLIR module `text`; `first` is one of its functions.
fn object_of(text: &str, first: &str) -> Result<Vec<u8>, String> {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    REGISTER_PASSES.call_once(register_all_passes);
    register_all_llvm_translations(&context);
    let mut module = Module::parse(&context, text).ok_or_else(|| {
        "the CPU kernels' MLIR does not parse or verify (see `gdc emit --stage cpu-mlir`)".to_string()
    })?;
    let pm = PassManager::new(&context);
    parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE)
        .map_err(|e| format!("the CPU pass pipeline is not valid: {e}"))?;
    pm.run(&mut module).map_err(|e| format!("lowering the CPU kernels to the LLVM dialect failed: {e}"))?;
    let engine = ExecutionEngine::new(&module, 3, &[], true, false);
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
