//! Hoisting: every scalar is computed in the earliest place that has its inputs. Work that
//! depends only on hyperparameters, `step`, globals and constants (bias corrections,
//! schedules) moves to the host prelude, once per step; work that also depends on the
//! parameter's shape runs once per parameter; only scalars derived from reductions (or from
//! scalar state) stay in kernels.
//!
//!   phase(const | hyper | step | global | prepare_out) = host
//!   phase(shape | present)                           = param
//!   phase(load of scalar state)                      = device
//!   phase(reduction, tensor, store)                  = kernel
//!   phase(other scalar)  = max(phase(args), phase(guard)), kernel arguments counting as device
//!
//! A global an update assigns is stored once per step, after every parameter has run:
//! `after_step` lists what the host computes then.

use super::Phase;
use crate::ir::{Func, Op, Target, Value};

pub fn phases(func: &Func) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::with_capacity(func.insts.len());
    for inst in &func.insts {
        let scalar = inst.ty.as_ref().is_some_and(|t| t.is_scalar());
        let phase = match &inst.op {
            Op::Store(Target::Global(_)) => Phase::Host,
            Op::Store(_) => Phase::Kernel,
            _ if !scalar => Phase::Kernel,
            Op::Reduce(..) => Phase::Kernel,
            Op::Const(_) | Op::Bool(_) | Op::Hyper(_) | Op::Step | Op::Global(_) | Op::PrepareOut(_) => Phase::Host,
            Op::Shape(_) | Op::Present(_) => Phase::Param,
            Op::Load(_) | Op::Param | Op::Grad => Phase::Device,
            _ => inst
                .args
                .iter()
                .chain(&inst.guard)
                .map(|a| match out[a.index()] {
                    Phase::Kernel => Phase::Device,
                    p => p,
                })
                .max()
                .unwrap_or(Phase::Host),
        };
        out.push(phase);
    }
    out
}

/// The host prelude (once per step) and the per-parameter block, each in order (stores of
/// globals come after the step: `after_step`).
pub fn host_blocks(func: &Func, phases: &[Phase]) -> (Vec<Value>, Vec<Value>) {
    let pick = |p: Phase| {
        func.values().filter(|v| phases[v.index()] == p && !matches!(func.inst(*v).op, Op::Store(_))).collect()
    };
    (pick(Phase::Host), pick(Phase::Param))
}

/// What the host computes after every item of an update's step, in order: each global the
/// update stores, preceded by the scalars its value needs that the prelude did not compute
/// (reductions over every parameter, scalars derived from them). The verifier proved these
/// the same for every parameter, so the host computes them once.
pub fn after_step(func: &Func, phases: &[Phase]) -> Vec<Value> {
    let mut need = vec![false; func.insts.len()];
    let mut stack: Vec<Value> =
        func.values().filter(|v| matches!(func.inst(*v).op, Op::Store(Target::Global(_)))).collect();
    while let Some(v) = stack.pop() {
        if need[v.index()] {
            continue;
        }
        let inst = func.inst(v);
        let store = matches!(inst.op, Op::Store(_));
        if !store && matches!(phases[v.index()], Phase::Host | Phase::Param) {
            continue;
        }
        need[v.index()] = true;
        // A reduction over every parameter is folded from each member's own reduction.
        if !matches!(inst.op, Op::AcrossParams(_)) {
            stack.extend(inst.args.iter().chain(&inst.guard));
        }
    }
    func.values().filter(|v| need[v.index()]).collect()
}
