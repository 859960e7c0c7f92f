//! The IR verifier, run after lowering and after every pass in debug builds and tests.
//! A failure is a compiler bug; the error carries the function's text with the offending
//! instruction marked.
//!
//! Invariants:
//! 1. Every argument and guard refers to an earlier instruction (definition before use).
//! 2. No instruction uses a store (stores define no value) as an argument or guard.
//! 3. Each operation has its number of arguments, and its recorded type is the one the
//!    shape rules give for its arguments' types (`result_type`).
//! 4. A guard is a scalar bool.
//! 5. Hyper, state, global, prepare-out and input indices are in range; a load of state or
//!    an input has its declared shape (`like(p)` takes the variant's parameter shape).
//! 6. Each target is stored at most once per function, with a value of its shape (or one
//!    that broadcasts to it).
//! 7. The prepare function reads no parameter, gradient, state or shape scalar and stores
//!    only globals; init functions store no globals, read no gradient and no state; only
//!    update functions read inputs.
//! 8. A global an update stores is uniform, the same for every parameter: computed only from
//!    constants, hyperparameters, `step`, globals, `prepare`'s outputs and reductions over
//!    every parameter (`AcrossParams`), under a guard computed the same way.
//! 9. Every variant's update folds the same reductions over every parameter: its
//!    `AcrossParams` instructions, in order, have the same kinds as every other variant's
//!    (`plan/folds.rs` folds slot `k` of every variant together). Init and `prepare` fold none.

use super::print::{inst_text, module_text};
use super::*;
use gdc_dsl::types::{Elem, Shape};
use std::collections::HashSet;

fn arity(op: &Op) -> usize {
    match op {
        Op::Unary(_)
        | Op::Broadcast
        | Op::Reduce(..)
        | Op::AcrossParams(_)
        | Op::Transpose
        | Op::Eigvecs(_)
        | Op::Eigvals(_)
        | Op::EigvecsDesc(_)
        | Op::Qr(_)
        | Op::SortPerm
        | Op::AxisMin
        | Op::AxisMax
        | Op::Store(_) => 1,
        Op::Binary(_) | Op::MatMul { .. } | Op::Outer | Op::InvRoot(..) => 2,
        Op::Select => 3,
        _ => 0,
    }
}

/// Checks every function of the module; the error holds the module text and the reason.
pub fn verify(m: &Module) -> Result<(), String> {
    for (label, func) in m.funcs() {
        let pattern =
            m.variants.iter().find(|v| std::ptr::eq(&v.update, func) || std::ptr::eq(&v.init, func)).map(|v| v.pattern);
        if let Err((v, why)) = verify_func(m, func, pattern) {
            return Err(format!(
                "IR verifier: in `{label}`, {}: {why}\n--- module ---\n{}",
                inst_text(m, func, v),
                module_text(m)
            ));
        }
    }
    let folds = |f: &Func| -> Vec<ReduceKind> {
        f.insts.iter().filter_map(|i| if let Op::AcrossParams(k) = i.op { Some(k) } else { None }).collect()
    };
    if let Some(first) = m.variants.first() {
        let kinds = folds(&first.update);
        for (vi, v) in m.variants.iter().enumerate() {
            let (these, init) = (folds(&v.update), folds(&v.init));
            if these != kinds || !init.is_empty() {
                return Err(format!(
                    "IR verifier: variant {vi} folds {these:?} over every parameter (init {init:?}), variant 0 {kinds:?}: every update must fold the same reductions (invariant 9)\n--- module ---\n{}",
                    module_text(m)
                ));
            }
        }
    }
    if !folds(&m.prepare).is_empty() {
        return Err(format!(
            "IR verifier: `prepare` folds over every parameter (invariant 9)\n--- module ---\n{}",
            module_text(m)
        ));
    }
    Ok(())
}

fn verify_func(m: &Module, func: &Func, pattern: Option<Pattern>) -> Result<(), (Value, String)> {
    let param_shape = pattern.map_or(Shape::Like, Pattern::param_shape);
    let mut stored = HashSet::new();
    // Whether each value is uniform (invariant 8).
    let mut uniform: Vec<bool> = Vec::with_capacity(func.insts.len());
    for v in func.values() {
        let inst = func.inst(v);
        let all_uniform =
            |uniform: &[bool]| inst.args.iter().chain(&inst.guard).all(|a| uniform.get(a.index()) == Some(&true));
        uniform.push(match inst.op {
            Op::Const(_) | Op::Bool(_) | Op::Hyper(_) | Op::Step | Op::Global(_) | Op::PrepareOut(_) => true,
            Op::AcrossParams(_) => inst.guard.is_none_or(|g| uniform.get(g.index()) == Some(&true)),
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Store(Target::Global(_)) => {
                inst.ty.as_ref().is_none_or(Ty::is_scalar) && all_uniform(&uniform)
            }
            _ => false,
        });
        let fail = |why: String| Err((v, why));
        for a in inst.args.iter().chain(&inst.guard) {
            if a.index() >= v.index() {
                return fail(format!("{a} is used before it is defined"));
            }
            if func.inst(*a).ty.is_none() {
                return fail(format!("{a} is a store and defines no value"));
            }
        }
        // A product's optional third operand is its precision (see `Op::MatMul`).
        let precision = matches!(inst.op, Op::MatMul { .. }) && inst.args.len() == 3;
        if inst.args.len() != arity(&inst.op) && !precision {
            return fail(format!("expected {} arguments, found {}", arity(&inst.op), inst.args.len()));
        }
        if let Some(g) = inst.guard {
            if *func.ty(g) != Ty::BOOL {
                return fail(format!("the guard {g} is not a scalar bool"));
            }
        }
        let arg_tys: Vec<&Ty> = inst.args.iter().map(|a| func.ty(*a)).collect();
        let in_range = match &inst.op {
            Op::Hyper(i) => *i < m.hypers.len(),
            Op::Global(i) | Op::Store(Target::Global(i)) => *i < m.globals.len(),
            Op::PrepareOut(i) => *i < m.prepare_outs.len(),
            Op::Load(i) | Op::Store(Target::State(i)) => *i < m.states.len(),
            Op::Input(i) | Op::Present(i) => *i < m.inputs.len(),
            Op::Shape(ShapeScalar::InputDim { input, axis }) => m
                .inputs
                .get(*input as usize)
                .is_some_and(|x| matches!(&x.shape, Shape::Dims(d) if (*axis as usize) < d.len())),
            _ => true,
        };
        if !in_range {
            return fail("an index out of range".into());
        }
        let allowed = match (func.kind, &inst.op) {
            (FuncKind::Prepare, Op::Param | Op::Grad | Op::Load(_) | Op::Shape(_) | Op::PrepareOut(_)) => false,
            (FuncKind::Prepare, Op::Store(t)) => matches!(t, Target::Global(_)),
            (FuncKind::Update, Op::Store(Target::Global(_))) => uniform[v.index()],
            (_, Op::Store(Target::Global(_))) => false,
            (FuncKind::Init, Op::Grad | Op::Load(_) | Op::PrepareOut(_)) => false,
            (FuncKind::Prepare | FuncKind::Init, Op::Input(_) | Op::Present(_)) => false,
            _ => true,
        };
        if !allowed {
            return fail(format!("not allowed in a {:?} function", func.kind));
        }
        if let Op::Store(target) = &inst.op {
            if !stored.insert(*target) {
                return fail("a second store to the same target".into());
            }
            let want = match target {
                Target::Param => param_shape.clone(),
                Target::State(i) => state_shape(m, *i, &param_shape),
                Target::Global(_) => Shape::Scalar,
            };
            let got = &arg_tys[0].shape;
            if gdc_dsl::types::broadcast(&want, got).ok().as_ref() != Some(&want) || arg_tys[0].elem != Elem::Num {
                return fail(format!("stores {} into a target of shape {want}", super::print::type_text(arg_tys[0])));
            }
            if inst.ty.is_some() {
                return fail("a store has a type".into());
            }
            continue;
        }
        let Some(ty) = &inst.ty else { return fail("a value without a type".into()) };
        let expected = match &inst.op {
            Op::Param | Op::Grad => Some(Ty::num(param_shape.clone())),
            Op::Load(i) => Some(Ty::num(state_shape(m, *i, &param_shape))),
            Op::Input(i) => {
                let declared = &m.inputs[*i].shape;
                Some(Ty::num(if *declared == Shape::Like { param_shape.clone() } else { declared.clone() }))
            }
            Op::Broadcast => {
                let fits = gdc_dsl::types::broadcast(&ty.shape, &arg_tys[0].shape).ok().as_ref() == Some(&ty.shape);
                if fits {
                    Some(ty.clone())
                } else {
                    None
                }
            }
            Op::Eye => matches!(ty.shape.rank2(), Some((a, b)) if a == b).then(|| ty.clone()),
            // Per-axis state and the parameter's shape, each into the other.
            Op::AxisMin | Op::AxisMax => {
                let axes = Shape::dims(&[gdc_dsl::builtins::AXES]);
                let (from, to) = if inst.op == Op::AxisMin { (&axes, &param_shape) } else { (&param_shape, &axes) };
                (arg_tys[0].shape == *from).then(|| Ty::num(to.clone()))
            }
            Op::PrepareOut(i) => Some(m.prepare.ty(m.prepare_outs[*i].1).clone()),
            Op::Hyper(i) => Some(if m.hypers[*i].ty == HyperTy::Bool { Ty::BOOL } else { Ty::NUM }),
            op => result_type(op, &arg_tys, Some(ty)),
        };
        if expected.as_ref() != Some(ty) {
            let want = expected.map_or("no valid type".to_string(), |t| super::print::type_text(&t));
            return fail(format!("recorded type {}, but the arguments give {want}", super::print::type_text(ty)));
        }
    }
    Ok(())
}

/// The shape of a state in a variant whose parameter has `param_shape`.
pub fn state_shape(m: &Module, i: usize, param_shape: &Shape) -> Shape {
    match &m.states[i].shape {
        Shape::Like => param_shape.clone(),
        s => s.clone(),
    }
}
