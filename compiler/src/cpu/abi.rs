//! The calling convention between a compiled CPU kernel and the runtime: which buffers its
//! pointer table holds, which uniform scalars the host passes, how it iterates (a flat SIMD
//! loop over any element range, or a grid loop over any band of rows), and where reductions
//! land.
//!
//! Every kernel is `extern "C" fn(bufs, scalars, sizes, start, end, partials)`:
//! - `bufs: *const *mut f32`: one pointer per entry of [`KernelAbi::buffers`];
//! - `scalars: *const f32`: per entry of [`KernelAbi::scalars`], its value four times over
//!   (16 bytes, one per vector lane), computed by the host in float64 and rounded (host and
//!   per-parameter scalars, device scalars, reduction slots of earlier items, scalar state,
//!   output guards);
//! - `sizes: *const u64`: the parameter's `[numel, rows, cols]`;
//! - `start..end`: the elements ([`Mode::Flat`]) or rows ([`Mode::Grid`]) to process;
//! - `partials: *mut f64`: this chunk's slots, laid out as [`crate::chunks`] says: the full
//!   reductions in [`KernelAbi::reductions`] order, then (grid kernels) the axis reductions
//!   of the band, which the runtime combines and writes to their buffers.

use crate::interp::names_of as names;
use crate::ir::{Func, Op};
use crate::plan::{Buffer, Kernel};
use gdc_dsl::types::Shape;

/// How the CPU runtime cuts a launch into chunks: 64K elements, or bands of about 128K
/// elements (fewer, larger bands: each carries a float64 partial per column of every
/// reduction along the rows, which the host folds). Fixed, so chunk boundaries (and the
/// order in which reductions are combined) do not depend on the thread count.
pub const CHUNKS: crate::chunks::ChunkSizes = crate::chunks::ChunkSizes { flat: 1 << 16, grid: 1 << 17 };

/// The machine-code signature every kernel has.
pub type KernelFn = unsafe extern "C" fn(*const *mut f32, *const f32, *const u64, u64, u64, *mut f64);

/// How a kernel iterates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every tensor value has the kernel's shape: one loop over a flat element range, four
    /// lanes at a time, so the runtime may cut it into chunks across threads.
    Flat,
    /// A matrix domain with broadcast operands, axis reductions or index-dependent values
    /// (`eye`): a row-by-column loop over a band of rows, so the runtime may cut a tensor
    /// into bands across threads.
    Grid,
}

/// What the runtime must provide to call one compiled kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelAbi {
    pub mode: Mode,
    pub buffers: Vec<Buffer>,
    /// Uniform values, in the order of the `scalars` array.
    pub scalars: Vec<crate::ir::Value>,
    /// Full reductions (the kernel's slots), in `partials` order.
    pub reductions: Vec<crate::ir::Value>,
    /// Axis reductions of a grid kernel: the value and whether its length is the domain's
    /// rows (`false`: its columns). Their scratch follows the full reductions in `partials`.
    pub axis_reductions: Vec<(crate::ir::Value, bool)>,
    /// Per buffer: whether it holds bfloat16 (a `state m: bf16`), 2 bytes an element, which
    /// the kernel widens when loading and rounds when storing. Set by [`mark_bf16`].
    pub bf16: Vec<bool>,
}

/// Marks the buffers of `abi` that hold bf16 state of module `m`.
pub fn mark_bf16(abi: &mut KernelAbi, m: &crate::ir::Module) {
    abi.bf16 = abi.buffers.iter().map(|b| matches!(b, Buffer::State(s) if m.states[*s].bf16)).collect();
}

/// Which of `[numel, rows, cols]` a dimension name is.
pub fn size_index(name: &str) -> usize {
    match name {
        "rows" => 1,
        "cols" => 2,
        _ => 0,
    }
}

/// Lays out a kernel: its buffers, uniform scalars, reductions and mode.
pub fn layout(func: &Func, k: &Kernel) -> Result<KernelAbi, String> {
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut add_buffer = |b: Buffer| {
        if !buffers.contains(&b) {
            buffers.push(b);
        }
    };
    let domain = names(&k.domain);
    let mut grid = false;
    for (v, b) in &k.inputs {
        add_buffer(*b);
        let shape = &func.ty(*v).shape;
        if *shape != Shape::Scalar && names(shape) != domain {
            grid = true;
        }
    }
    for o in &k.outputs {
        add_buffer(o.buffer);
    }
    let defined: std::collections::HashSet<_> = k.body.iter().chain(k.inputs.iter().map(|(v, _)| v)).collect();
    let mut scalars = Vec::new();
    let mut axis_reductions = Vec::new();
    let need = |v: crate::ir::Value, scalars: &mut Vec<crate::ir::Value>| -> Result<(), String> {
        if defined.contains(&v) || scalars.contains(&v) {
            return Ok(());
        }
        if !func.ty(v).is_scalar() {
            return Err(format!("kernel k{} reads tensor {v}, which is neither an input nor computed by it", k.id));
        }
        scalars.push(v);
        Ok(())
    };
    for v in &k.body {
        let inst = func.inst(*v);
        for a in &inst.args {
            need(*a, &mut scalars)?;
        }
        match inst.op {
            Op::Reduce(_, Some(axis)) => {
                grid = true;
                axis_reductions.push((*v, axis == 1));
            }
            Op::Eye => grid = true,
            Op::Broadcast => {
                let s = &func.ty(inst.args[0]).shape;
                if *s != Shape::Scalar && names(s) != domain {
                    grid = true;
                }
            }
            _ => {}
        }
    }
    for o in &k.outputs {
        need(o.value, &mut scalars)?;
        if let Some(g) = o.guard {
            need(g, &mut scalars)?;
        }
    }
    if grid && !matches!(&k.domain, Shape::Dims(d) if d.len() == 2) {
        return Err(format!(
            "kernel k{} broadcasts over a domain of shape {:?}, which is not a matrix",
            k.id, k.domain
        ));
    }
    let n = buffers.len();
    Ok(KernelAbi {
        mode: if grid { Mode::Grid } else { Mode::Flat },
        buffers,
        scalars,
        reductions: k.reductions.clone(),
        axis_reductions,
        bf16: vec![false; n],
    })
}
