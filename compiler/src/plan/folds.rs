//! Reductions over every parameter (`AcrossParams`: `global_norm`, a policy's clipping) and
//! the order in which an engine runs a step's items so that each is folded over every
//! parameter of every update variant before anything reads it.
//!
//! A variant's `AcrossParams` instructions, in instruction order, are its fold *slots*; every
//! variant that has any has the same kinds in the same order (the IR verifier's invariant 9:
//! they are a policy's parts, inlined in front of every routed update, or the reductions of
//! an optimizer with one update). Slot `k` of the step is folded from the parts of slot `k`
//! of every member of every variant, variant by variant, each in member order, so the result
//! does not depend on threads, chunks or the number of ranks. The schedule runs each
//! variant's items up to the one that makes its part of slot `k`, for every variant, then
//! folds slot `k`, and so on; a program of one variant runs its items in plan order, folding
//! each slot right after the item that makes it.

use super::{FuncPlan, Item, Pass, Plan};
use crate::ir::{Func, Op, ReduceKind, Value};
use std::ops::Range;

/// One of a variant's reductions over every parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The `AcrossParams` instruction: its value, the fold, for every member.
    pub value: Value,
    pub kind: ReduceKind,
    /// Its argument: each member's own part.
    pub part: Value,
}

/// A variant's fold slots, in instruction order.
pub fn slots(func: &Func) -> Vec<Slot> {
    func.values()
        .filter_map(|v| match func.inst(v).op {
            Op::AcrossParams(kind) => Some(Slot { value: v, kind, part: func.inst(v).args[0] }),
            _ => None,
        })
        .collect()
}

/// What an engine does next in a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Runs the items of `variant`'s plan whose indices (in `FuncPlan::items`) lie in
    /// `items`, those of the pass only, in order.
    Items { variant: usize, items: Range<usize> },
    /// Folds one slot over every member of every variant: each variant with its own
    /// instruction of that slot (the fold's value and its members' parts).
    Fold { slots: Vec<(usize, Slot)> },
}

/// The order of a pass over the variants `active` (those with members, ascending) of the
/// update plans (`init` false) or the initialisers (`init` true). An error is a compiler bug:
/// slots that differ between variants, or a slot whose part no item before it makes.
pub fn schedule(plan: &Plan, active: &[usize], init: bool, pass: Pass) -> Result<Vec<Stage>, String> {
    let fplan = |vi: usize| -> (&Func, &FuncPlan) {
        let (v, p) = (&plan.module.variants[vi], &plan.variants[vi]);
        if init {
            (&v.init, &p.init)
        } else {
            (&v.update, &p.update)
        }
    };
    let mut ends: Vec<Vec<usize>> = Vec::new();
    let mut all: Vec<Vec<Slot>> = Vec::new();
    let mut kinds: Option<Vec<ReduceKind>> = None;
    for &vi in active {
        let (func, fp) = fplan(vi);
        let own = slots(func);
        let these: Vec<ReduceKind> = own.iter().map(|s| s.kind).collect();
        if pass == Pass::Step {
            match &kinds {
                Some(k) if *k != these => {
                    return Err(format!(
                        "variant {vi} folds {these:?} over every parameter, another variant {k:?}: the slots must correspond"
                    ))
                }
                _ => kinds = Some(these),
            }
        }
        // Each slot's part is made by a kernel, or before any item (a per-parameter scalar).
        let mut at = Vec::new();
        let mut last = 0;
        for s in &own {
            let end = fp
                .items_of(pass)
                .find(|(_, item)| matches!(item, Item::Kernel(k) if k.reductions.contains(&s.part)))
                .map_or(0, |(ii, _)| ii + 1);
            if end < last {
                return Err(format!("variant {vi}: slot {} is made before the slot ahead of it", s.value));
            }
            last = end;
            at.push(end);
        }
        ends.push(at);
        all.push(own);
    }
    let n = if pass == Pass::Step { kinds.map_or(0, |k| k.len()) } else { 0 };
    let mut cursor = vec![0; active.len()];
    let mut out = Vec::new();
    for slot in 0..n {
        for (ai, &vi) in active.iter().enumerate() {
            let end = ends[ai].get(slot).copied().unwrap_or(0);
            if end > cursor[ai] {
                out.push(Stage::Items { variant: vi, items: cursor[ai]..end });
                cursor[ai] = end;
            }
        }
        out.push(Stage::Fold { slots: active.iter().zip(&all).map(|(&vi, own)| (vi, own[slot])).collect() });
    }
    for (ai, &vi) in active.iter().enumerate() {
        let len = fplan(vi).1.items.len();
        if len > cursor[ai] {
            out.push(Stage::Items { variant: vi, items: cursor[ai]..len });
        }
    }
    Ok(out)
}
