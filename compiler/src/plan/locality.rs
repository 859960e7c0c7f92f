//! Locality: whether a variant's step reads each element of a parameter on its own, so that
//! any slice of the parameter (a shard of its leading dimension, under FSDP or ZeRO) can be
//! stepped alone, with no communication, and give the elements the whole parameter's step
//! would, or needs only the sums and maxima of its shards combined across ranks. Distributed
//! training asks this to choose between stepping local shards alone, stepping them with
//! their reductions combined, and gathering a parameter to one owner rank.

use super::{FuncPlan, Item, Plan};
use crate::ir::{Func, Op, ShapeScalar};
use gdc_dsl::types::Shape;

/// True when every item of variant `variant`'s state initialisers and step (its gradient
/// check aside, which only counts) is an elementwise kernel: no library call, no reduction
/// (a norm, a mean, `global_norm`), no broadcast of a vector or matrix, no `eye`, and no
/// scalar that depends on the extent of the leading dimension (`numel`, `rows`, muP's
/// `width_mult` and `inf_dims`). `cols`, the rank and the role survive slicing the leading
/// dimension, so they are allowed.
/// How a shard of a parameter's leading dimension can be stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    /// Alone: every element of the step reads only its own elements.
    Elementwise,
    /// Alone but for whole-tensor reductions (a norm, a max-abs, `global_norm`): each shard's
    /// partial sums and maxima, combined across the shards before anything reads them, give
    /// the whole parameter's values (up to float64 rounding of the combination).
    Reduces,
    /// Only whole: library calls (matrix products, decompositions), reductions along an axis,
    /// broadcasts of vectors, `eye`, or scalars of the leading dimension's extent.
    Whole,
}

/// The locality of variant `variant`'s state initialisers and step (its gradient check
/// aside, which only counts): [`Locality::Elementwise`] when every item is an elementwise
/// kernel with no reduction; [`Locality::Reduces`] when its kernels also reduce whole
/// tensors to scalars; otherwise [`Locality::Whole`]. No scalar may depend on the extent of
/// the leading dimension (`numel`, `rows`, muP's `width_mult` and `inf_dims`); `cols`, the
/// rank and the role survive slicing the leading dimension, so they are allowed.
pub fn locality(plan: &Plan, variant: usize) -> Locality {
    let module = &plan.module;
    let (vm, vp) = (&module.variants[variant], &plan.variants[variant]);
    let funcs = [(&vm.init, &vp.init, false), (&vm.update, &vp.update, true)];
    if funcs.iter().all(|(f, fp, update)| local_func(f, fp, *update, false)) {
        Locality::Elementwise
    } else if funcs.iter().all(|(f, fp, update)| local_func(f, fp, *update, true)) {
        Locality::Reduces
    } else {
        Locality::Whole
    }
}

/// Whether every item of `func` reads only its own elements, with whole-tensor reductions
/// to scalars allowed when `reductions`.
fn local_func(func: &Func, fp: &FuncPlan, update: bool, reductions: bool) -> bool {
    let check = if update { fp.check.map(|c| c.item) } else { None };
    let host_ok = fp.host.iter().chain(&fp.param).all(|v| local_op(func, *v, reductions));
    host_ok
        && fp.items.iter().enumerate().filter(|(ii, _)| Some(*ii) != check).all(|(_, item)| match item {
            Item::Lib(_) => false,
            Item::Kernel(k) => {
                (reductions || k.reductions.is_empty())
                    && k.scalars.iter().chain(&k.body).chain(&k.reductions).all(|v| local_op(func, *v, reductions))
            }
        })
}

fn local_op(func: &Func, v: crate::ir::Value, reductions: bool) -> bool {
    let inst = func.inst(v);
    match inst.op {
        // A whole-tensor reduction to a scalar; one along an axis makes a vector whose
        // elements span the shards' rows.
        Op::Reduce(_, None) | Op::AcrossParams(_) => reductions,
        Op::Reduce(_, Some(_)) | Op::Eye => false,
        Op::Shape(s) => {
            !matches!(s, ShapeScalar::Numel | ShapeScalar::Rows | ShapeScalar::WidthMult | ShapeScalar::InfDims)
        }
        Op::Broadcast => func.ty(inst.args[0]).shape == Shape::Scalar,
        ref op => op.is_elementwise() || matches!(op, Op::Store(_)),
    }
}
