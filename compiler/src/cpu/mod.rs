//! The CPU backend: every kernel of a plan compiled by Cranelift to machine code for the
//! host, in memory, or taken from the LLVM tier's object where an artifact carries one for a
//! level this CPU has ([`native`]). The runtime calls the kernels through [`abi`]'s
//! convention and runs the host scalars, library calls and thread pool itself.

#![allow(unsafe_code)]

pub mod abi;
pub mod clif;
mod libm;
#[cfg(feature = "mlir")]
pub mod llvm;
pub mod mlir;
pub mod native;

use crate::ir::Func;
use crate::plan::{FuncPlan, Item, Plan};
use abi::{KernelAbi, KernelFn};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use std::collections::HashMap;
use std::sync::Mutex;

/// One compiled kernel: its calling convention and its entry point.
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    pub abi: KernelAbi,
    pub entry: KernelFn,
}

/// The compiled kernels of one function plan, by item (`None` for library calls).
pub type CompiledItems = Vec<Option<CompiledKernel>>;

/// Machine code for every kernel of a plan. The code lives as long as this value.
pub struct CpuProgram {
    /// Per variant: the init plan's items, then the update plan's.
    pub variants: Vec<(CompiledItems, CompiledItems)>,
    /// The machine-code functions compiled: one per distinct kernel body.
    pub functions: usize,
    /// The LLVM tier's level whose code runs here, and how many kernel items it runs.
    pub native: Option<(native::Level, usize)>,
    /// The LLVM tier's loaded code, if any; never touched after loading.
    _native_code: Option<native::Loaded>,
    /// Owns the executable memory; never touched again after compilation.
    _module: Mutex<JITModule>,
}

// SAFETY: the kernels are pure functions of their arguments; the module's memory is only
// read (executed) after `finalize_definitions`, and the module itself is never used again.
unsafe impl Sync for CpuProgram {}

fn isa() -> Result<cranelift_codegen::isa::OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
    flags.set("is_pic", "false").map_err(|e| e.to_string())?;
    let isa = cranelift_native::builder().map_err(|e| format!("this host is not supported by Cranelift: {e}"))?;
    isa.finish(settings::Flags::new(flags)).map_err(|e| e.to_string())
}

fn new_module() -> Result<JITModule, String> {
    let mut jb = JITBuilder::with_isa(isa()?, default_libcall_names());
    for h in clif::Helper::ALL {
        jb.symbol(h.symbol(), libm::address(h));
    }
    Ok(JITModule::new(jb))
}

/// Builds the Cranelift function of one kernel into `ctx` and returns its ABI.
fn build_kernel(
    module: &mut JITModule,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    m: &crate::ir::Module,
    func: &Func,
    k: &crate::plan::Kernel,
) -> Result<KernelAbi, String> {
    let mut abi = abi::layout(func, k)?;
    abi::mark_bf16(&mut abi, m);
    ctx.func.signature = clif::signature(module.target_config().default_call_conv);
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let mut refs = clif::HelperRefs::new();
    for h in clif::Helper::ALL {
        let mut sig = module.make_signature();
        for _ in 0..h.arity() {
            sig.params.push(cranelift_codegen::ir::AbiParam::new(cranelift_codegen::ir::types::F32));
        }
        sig.returns.push(cranelift_codegen::ir::AbiParam::new(cranelift_codegen::ir::types::F32));
        let id = module.declare_function(h.symbol(), Linkage::Import, &sig).map_err(|e| e.to_string())?;
        refs.insert(h, module.declare_func_in_func(id, b.func));
    }
    clif::build(&mut b, func, k, &abi, &refs);
    b.finalize(module.target_config());
    Ok(abi)
}

/// Compiles every kernel of `plan`. Kernels whose Cranelift functions are identical share
/// one compilation: a kernel reads its buffers and scalars through its call's tables, so
/// the unrolled iterations of a loop (Muon's 99 Newton–Schulz iterations: 600 kernels, 10
/// distinct) differ only in their `KernelAbi`, which each keeps.
pub fn compile(plan: &Plan) -> Result<CpuProgram, String> {
    compile_with(plan, &[])
}

/// [`compile`], with the kernels `native` has for the best level this CPU runs
/// ([`native::Level::best_available`]) taken from its object instead of Cranelift. `native`
/// comes from a validated artifact: one entry per kernel item of `plan`.
pub fn compile_with(plan: &Plan, native: &[native::NativeLevel]) -> Result<CpuProgram, String> {
    refuse_bf16_library_operands(plan)?;
    let chosen = native::Level::best_available().and_then(|best| {
        native::Level::ALL.into_iter().skip_while(|l| *l != best).find_map(|l| native.iter().find(|n| n.level == l))
    });
    let loaded = match chosen {
        Some(n) => {
            let bytes = native::unhex(&n.object).map_err(|e| format!("the {} kernels: {e}", n.level.name()))?;
            let code = native::load(&bytes).map_err(|e| {
                format!("the {} kernels do not load: {e}; rebuild the artifact, or set GDC_NO_NATIVE=1", n.level.name())
            })?;
            Some((n, code))
        }
        None => None,
    };
    let mut kernel_index = 0usize;
    let mut native_count = 0usize;
    let mut module = new_module()?;
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut pending = Vec::new();
    let mut native_entries = Vec::new();
    let mut compiled: HashMap<String, FuncId> = HashMap::new();
    let m = &plan.module;
    for (vi, vp) in plan.variants.iter().enumerate() {
        for (fi, (func, fplan)) in
            [(&m.variants[vi].init, &vp.init), (&m.variants[vi].update, &vp.update)].into_iter().enumerate()
        {
            for (ii, item) in fplan.items.iter().enumerate() {
                let Item::Kernel(k) = item else { continue };
                let this = kernel_index;
                kernel_index += 1;
                if let Some((n, code)) = &loaded {
                    if let Some(Some(name)) = n.kernels.get(this) {
                        let ptr = code.function(name).ok_or_else(|| {
                            format!("the {} kernels have no function {name}: rebuild the artifact", n.level.name())
                        })?;
                        let mut abi = abi::layout(func, k)?;
                        abi::mark_bf16(&mut abi, m);
                        native_entries.push((vi, fi, ii, abi, ptr));
                        native_count += 1;
                        continue;
                    }
                }
                let abi = build_kernel(&mut module, &mut ctx, &mut fctx, m, func, k)?;
                let body = ctx.func.display().to_string();
                let id = match compiled.get(&body) {
                    Some(id) => *id,
                    None => {
                        let name = format!("v{vi}_{}_k{}", if fi == 0 { "init" } else { "update" }, k.id);
                        let id = module
                            .declare_function(&name, Linkage::Local, &ctx.func.signature)
                            .map_err(|e| e.to_string())?;
                        module.define_function(id, &mut ctx).map_err(|e| format!("{name}: {e:?}"))?;
                        compiled.insert(body, id);
                        id
                    }
                };
                module.clear_context(&mut ctx);
                pending.push((vi, fi, ii, abi, id));
            }
        }
    }
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let mut variants: Vec<(CompiledItems, CompiledItems)> =
        plan.variants.iter().map(|v| (vec![None; v.init.items.len()], vec![None; v.update.items.len()])).collect();
    for (vi, fi, ii, abi, id) in pending {
        let ptr = module.get_finalized_function(id);
        // SAFETY: `ptr` is the finalized code of a function built with `clif::signature`,
        // which is exactly `KernelFn`'s C signature.
        let entry: KernelFn = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        let slot = if fi == 0 { &mut variants[vi].0 } else { &mut variants[vi].1 };
        slot[ii] = Some(CompiledKernel { abi, entry });
    }
    for (vi, fi, ii, abi, ptr) in native_entries {
        // SAFETY: `ptr` is a function of the LLVM tier's object, compiled from
        // `mlir::kernel_text` with exactly `KernelFn`'s C signature, for a level this CPU has;
        // the object stays mapped as long as the program.
        let entry: KernelFn = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        let slot = if fi == 0 { &mut variants[vi].0 } else { &mut variants[vi].1 };
        slot[ii] = Some(CompiledKernel { abi, entry });
    }
    if let Some((n, _)) = &loaded {
        if n.kernels.len() != kernel_index {
            return Err(format!(
                "the {} kernels cover {} kernel items, the plan has {kernel_index}: rebuild the artifact",
                n.level.name(),
                n.kernels.len()
            ));
        }
    }
    Ok(CpuProgram {
        variants,
        functions: compiled.len(),
        native: loaded.as_ref().map(|(n, _)| (n.level, native_count)),
        _native_code: loaded.map(|(_, code)| code),
        _module: Mutex::new(module),
    })
}

/// Matrix operations read float32 buffers: a bf16 state may only be read by kernels.
fn refuse_bf16_library_operands(plan: &Plan) -> Result<(), String> {
    for vp in &plan.variants {
        for item in vp.init.items.iter().chain(&vp.update.items) {
            let Item::Lib(l) = item else { continue };
            for (_, b) in &l.inputs {
                if let crate::plan::Buffer::State(s) = b {
                    let st = &plan.module.states[*s];
                    if st.bf16 {
                        return Err(format!(
                            "state `{}` is bf16 and read by a matrix operation, which reads float32: declare it without `bf16`",
                            st.name
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The Cranelift IR of every kernel of `plan`, for `gdc emit --stage clif`.
pub fn clif_text(plan: &Plan) -> Result<String, String> {
    let mut module = new_module()?;
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut out = String::new();
    let m = &plan.module;
    for (vi, vp) in plan.variants.iter().enumerate() {
        let label = crate::ir::pattern_text(vp.pattern);
        for (what, func, fplan) in
            [("init", &m.variants[vi].init, &vp.init), ("update", &m.variants[vi].update, &vp.update)]
        {
            for k in kernels(fplan) {
                let abi = build_kernel(&mut module, &mut ctx, &mut fctx, m, func, k)?;
                out.push_str(&format!(
                    "; {what}{label} kernel k{}: {:?}, buffers {:?}, {} uniform scalar(s), {} reduction(s)\n",
                    k.id,
                    abi.mode,
                    abi.buffers,
                    abi.scalars.len(),
                    abi.reductions.len() + abi.axis_reductions.len()
                ));
                out.push_str(&ctx.func.display().to_string());
                out.push('\n');
                module.clear_context(&mut ctx);
            }
        }
    }
    Ok(out)
}

fn kernels(fplan: &FuncPlan) -> impl Iterator<Item = &crate::plan::Kernel> {
    fplan.items.iter().filter_map(|i| match i {
        Item::Kernel(k) => Some(k),
        Item::Lib(_) => None,
    })
}
