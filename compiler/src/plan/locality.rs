//! Locality: whether a variant's step reads each element of a parameter on its own, so that
//! any slice of the parameter (a shard of its leading dimension, under FSDP or ZeRO) can be
//! stepped alone, with no communication, and give the elements the whole parameter's step
//! would. Distributed training asks this to choose between stepping local shards and
//! gathering a parameter to one owner rank.

use super::{FuncPlan, Item, Plan};
use crate::ir::{Func, Op, ShapeScalar};
use gdc_dsl::types::Shape;

/// True when every item of variant `variant`'s state initialisers and step (its gradient
/// check aside, which only counts) is an elementwise kernel: no library call, no reduction
/// (a norm, a mean, `global_norm`), no broadcast of a vector or matrix, no `eye`, and no
/// scalar that depends on the extent of the leading dimension (`numel`, `rows`, muP's
/// `width_mult` and `inf_dims`). `cols`, the rank and the role survive slicing the leading
/// dimension, so they are allowed.
pub fn elementwise(plan: &Plan, variant: usize) -> bool {
    let module = &plan.module;
    let (vm, vp) = (&module.variants[variant], &plan.variants[variant]);
    local_func(&vm.init, &vp.init, false) && local_func(&vm.update, &vp.update, true)
}

fn local_func(func: &Func, fp: &FuncPlan, update: bool) -> bool {
    let check = if update { fp.check.map(|c| c.item) } else { None };
    let host_ok = fp.host.iter().chain(&fp.param).all(|v| local_op(func, *v));
    host_ok
        && fp.items.iter().enumerate().filter(|(ii, _)| Some(*ii) != check).all(|(_, item)| match item {
            Item::Lib(_) => false,
            Item::Kernel(k) => k.reductions.is_empty() && k.scalars.iter().chain(&k.body).all(|v| local_op(func, *v)),
        })
}

fn local_op(func: &Func, v: crate::ir::Value) -> bool {
    let inst = func.inst(v);
    match inst.op {
        Op::Reduce(..) | Op::AcrossParams(_) | Op::Eye => false,
        Op::Shape(s) => {
            !matches!(s, ShapeScalar::Numel | ShapeScalar::Rows | ShapeScalar::WidthMult | ShapeScalar::InfDims)
        }
        Op::Broadcast => func.ty(inst.args[0]).shape == Shape::Scalar,
        ref op => op.is_elementwise() || matches!(op, Op::Store(_)),
    }
}
