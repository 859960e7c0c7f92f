//! Locality: whether a variant's step reads each element of a parameter on its own, so that
//! any slice of the parameter (a shard of its leading dimension, under FSDP or ZeRO) can be
//! stepped alone, with no communication, and give the elements the whole parameter's step
//! would, or needs only the sums and maxima of its shards combined across ranks. Distributed
//! training asks this to choose between stepping local shards alone, stepping them with
//! their reductions combined, and gathering a parameter to one owner rank.

use super::{FuncPlan, Item, Plan};
use crate::ir::{Func, Op};
use gdc_dsl::types::Shape;

/// How a shard of a parameter's leading dimension can be stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    /// Alone: every element of the step reads only its own row's elements (reductions along
    /// a row, `sum(x, axis = 1)`, stay within the shard).
    Elementwise,
    /// Alone but for reductions across rows — whole-tensor ones (a norm, a max-abs,
    /// `global_norm`) and column ones (`sum(x, axis = 0)` of a `[rows, cols]` value): each
    /// shard's partial sums and maxima, combined across the shards before anything reads
    /// them, give the whole parameter's values (up to float64 rounding of the combination).
    /// Values over columns alone (`[cols]`) are then the same on every rank.
    Reduces,
    /// Only whole: library calls (matrix products, decompositions), `eye`, values over both
    /// dimensions of anything but `[rows, cols]`, or a whole-tensor reduction of a value the
    /// shards hold alike (a `[cols]` vector, which the combination would count once per
    /// shard).
    Whole,
}

/// The locality of variant `variant`'s state initialisers and step (its gradient check
/// aside, which only counts): [`Locality::Elementwise`] when every item is a kernel that
/// reads only its rows; [`Locality::Reduces`] when its kernels also reduce across rows;
/// otherwise [`Locality::Whole`]. Shape scalars (`numel`, `rows`, muP's) are allowed: a
/// shard is bound with the whole parameter's (`ParamInfo::shard`).
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

/// Whether every item of `func` reads only its own rows, with reductions across rows
/// allowed when `across`.
fn local_func(func: &Func, fp: &FuncPlan, update: bool, across: bool) -> bool {
    let check = if update { fp.check.map(|c| c.item) } else { None };
    let host_ok = fp.host.iter().chain(&fp.param).all(|v| local_op(func, *v, across));
    host_ok
        && fp.items.iter().enumerate().filter(|(ii, _)| Some(*ii) != check).all(|(_, item)| match item {
            Item::Lib(_) => false,
            Item::Kernel(k) => {
                let guarded = k.guard.is_some() || k.outputs.iter().any(|o| o.guard.is_some());
                (across || k.reductions.is_empty())
                    && k.scalars.iter().chain(&k.body).chain(&k.reductions).all(|v| {
                        // A column reduction's partials are combined after its kernel, into
                        // its output: an unconditional one.
                        local_op(func, *v, across) && !(guarded && is_column_reduction(func, *v))
                    })
            }
        })
}

fn local_op(func: &Func, v: crate::ir::Value, across: bool) -> bool {
    let inst = func.inst(v);
    match inst.op {
        Op::Reduce(_, None) => across && cut_by_rows(&func.ty(inst.args[0]).shape),
        Op::AcrossParams(_) => across,
        Op::Reduce(_, Some(_)) => {
            on_rows_and_cols(&func.ty(inst.args[0]).shape) && (across || !is_column_reduction(func, v))
        }
        Op::Eye => false,
        Op::Broadcast => {
            let (from, to) = (&func.ty(inst.args[0]).shape, &func.ty(v).shape);
            *from == Shape::Scalar || (vector(from) && on_rows_and_cols(to))
        }
        ref op => {
            (op.is_elementwise() || matches!(op, Op::Store(_) | Op::Shape(_)))
                && inst.ty.as_ref().is_none_or(|t| shardable(&t.shape))
        }
    }
}

/// A shape whose values a shard of the rows holds its part of, or all of: not one over two
/// dimensions other than `[rows, cols]` (a `[rows, rows]` value spans other shards' rows).
fn shardable(shape: &Shape) -> bool {
    match shape {
        Shape::Dims(d) if d.len() >= 2 => on_rows_and_cols(shape),
        _ => true,
    }
}

/// `sum(x, axis = 0)` (or a max) of a `[rows, cols]` value: one partial per column.
fn is_column_reduction(func: &Func, v: crate::ir::Value) -> bool {
    matches!(func.inst(v).op, Op::Reduce(_, Some(0)))
}

fn on_rows_and_cols(shape: &Shape) -> bool {
    matches!(shape, Shape::Dims(d) if d.len() == 2 && d[0] == "rows" && d[1] == "cols")
}

fn vector(shape: &Shape) -> bool {
    matches!(shape, Shape::Dims(d) if d.len() == 1 && (d[0] == "rows" || d[0] == "cols"))
}

/// Whether each shard holds its own part of a value (or state) of `shape` (its rows),
/// rather than the same whole value as every other shard (a scalar, a `[cols]` vector).
pub fn cut_by_rows(shape: &Shape) -> bool {
    match shape {
        Shape::Like => true,
        Shape::Dims(d) => d.iter().any(|n| n == "rows"),
        Shape::Scalar => false,
    }
}
