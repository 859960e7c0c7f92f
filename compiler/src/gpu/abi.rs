//! The calling convention between a generated GPU kernel and the CUDA runtime: one launch
//! covers every parameter bound to a variant (multi-tensor), through tables the runtime
//! fills on the host and uploads before the launch.
//!
//! Every kernel is `kernel(ptrs, scalars, sizes, chunks, nchunks, partials)` with
//! `BLOCK` threads per block and any number of blocks (the kernel strides over the chunks):
//! - `ptrs: *const u64`, `[calls][buffers]`: the device address of each buffer of
//!   [`KernelAbi::buffers`] for each call (a call is one parameter of the launch);
//! - `scalars: *const f32`, `[calls][scalar_stride]`: the values of [`KernelAbi::scalars`]
//!   for each call, computed by the host in float64 and rounded, each once
//!   (`scalar_stride = max(1, scalars.len())`). A scalar input of a larger domain (scalar
//!   state) is read by the kernel from element 0 of its buffer;
//! - `sizes: *const i64`, `[calls][4]`: the parameter's numel, rows, cols, and 1 when every
//!   buffer address of the call is 16-byte aligned (the kernel then moves 4 floats per load
//!   and store; else one);
//! - `chunks: *const i64`, `[nchunks][4]`: call, start, end, partials offset. A *flat* chunk
//!   is the element range `start..end` of the kernel's domain (`start` a multiple of 4); a
//!   *grid* chunk is the row range `start..end` of its matrix domain, all columns;
//! - `partials: *mut f64`: each chunk writes (never accumulates into) its slots from its
//!   offset: the full reductions in [`KernelAbi::reductions`] order; then, for a grid chunk,
//!   per axis reduction in [`KernelAbi::axis_reductions`] order, `end - start` complete
//!   values for a reduction along the columns (one per row of the chunk) or `cols` values
//!   for one along the rows (this chunk's rows only).
//!
//! Reductions are deterministic: each thread accumulates in float64 in a fixed order, a
//! block combines its threads by a fixed tree in shared memory, and the host combines the
//! chunks in chunk order (then writes axis results to their buffers). Nothing depends on
//! timing or on the number of blocks.

pub use crate::chunks::{CallExtent, Chunk, ChunkSizes, Chunking, Combined};
pub use crate::cpu::abi::{layout, size_index, KernelAbi, Mode};
use serde::{Deserialize, Serialize};

/// Threads per block, for every kernel.
pub const BLOCK: u32 = 256;
/// Elements per flat chunk: 16 vector iterations of a block, a multiple of 4.
pub const FLAT_CHUNK: usize = 16 * 4 * BLOCK as usize;
/// About how many elements a grid chunk covers: `max(1, GRID_CHUNK / cols)` rows.
pub const GRID_CHUNK: usize = 16384;
/// How a launch is cut into chunks (see [`crate::chunks`]).
pub const CHUNKS: ChunkSizes = ChunkSizes { flat: FLAT_CHUNK, grid: GRID_CHUNK };
/// `i64`s per entry of the `sizes` table.
pub const SIZES_STRIDE: usize = 4;
/// `i64`s per entry of the `chunks` table.
pub const CHUNK_STRIDE: usize = 4;

/// The entry-point name of item `item` of variant `variant`'s init or update plan.
pub fn kernel_name(variant: usize, init: bool, item: usize) -> String {
    format!("gdc_v{variant}_{}_k{item}", if init { "init" } else { "update" })
}

/// What an artifact records about each kernel, so a runtime without the compiler's
/// backends can check that the PTX it loads was made for the plan it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelMeta {
    /// The PTX entry point that runs it: [`kernel_name`] of the first kernel of the plan
    /// with the same code (`mlir::kernel_functions`).
    pub name: String,
    pub variant: usize,
    pub init: bool,
    /// The item's index in its function plan.
    pub item: usize,
    /// `"flat"` or `"grid"`.
    pub mode: String,
    /// Threads per block.
    pub block: u32,
    pub buffers: usize,
    pub scalars: usize,
    pub reductions: usize,
    pub axis_reductions: usize,
}

impl KernelMeta {
    pub fn new(variant: usize, init: bool, item: usize, abi: &KernelAbi) -> KernelMeta {
        KernelMeta {
            name: kernel_name(variant, init, item),
            variant,
            init,
            item,
            mode: match abi.mode {
                Mode::Flat => "flat",
                Mode::Grid => "grid",
            }
            .into(),
            block: BLOCK,
            buffers: abi.buffers.len(),
            scalars: abi.scalars.len(),
            reductions: abi.reductions.len(),
            axis_reductions: abi.axis_reductions.len(),
        }
    }
}

/// The GPU code of a whole plan, as `gdc build --target cuda` stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuProgram {
    /// `sm_80`, `sm_90`, ...
    pub arch: String,
    /// One PTX module with every kernel.
    pub ptx: String,
    pub kernels: Vec<KernelMeta>,
}

/// The kernel metadata of every kernel item of a plan, in (variant, init then update, item)
/// order: what the PTX must provide. Each names the function that runs it, shared by
/// kernels of identical code (`mlir::kernel_functions`).
pub fn plan_kernels(plan: &crate::plan::Plan) -> Result<Vec<(KernelMeta, KernelAbi)>, String> {
    kernels_named(plan, super::mlir::kernel_functions(plan)?.0)
}

/// [`plan_kernels`] with each kernel's function name already known (`mlir::kernel_functions`).
pub fn kernels_named(plan: &crate::plan::Plan, names: Vec<String>) -> Result<Vec<(KernelMeta, KernelAbi)>, String> {
    let mut functions = names.into_iter();
    let mut out = Vec::new();
    for (vi, (vp, vm)) in plan.variants.iter().zip(&plan.module.variants).enumerate() {
        for (init, fp, func) in [(true, &vp.init, &vm.init), (false, &vp.update, &vm.update)] {
            for (ii, item) in fp.items.iter().enumerate() {
                if let crate::plan::Item::Kernel(k) = item {
                    let abi = layout(func, k)?;
                    let mut meta = KernelMeta::new(vi, init, ii, &abi);
                    meta.name = functions.next().ok_or("fewer kernel functions than kernels")?;
                    out.push((meta, abi));
                }
            }
        }
    }
    Ok(out)
}
