//! The gradient check of an update plan: one extra kernel, appended after the step's items,
//! that counts the gradient's non-finite elements (NaN or infinity) into a reduction slot:
//!
//! ```text
//! z     = g * 0                  // 0 (or -0) for a finite element, NaN otherwise
//! bad   = select(z == 0, 0, 1)   // NaN == 0 is false
//! count = reduce.sum bad         // exact: float64 partials of whole numbers
//! ```
//!
//! Engines run it, over every parameter, before anything of the step when the training
//! code asks for non-finite gradients to be skipped or refused (`NonFinite::SkipStep`,
//! `NonFinite::Error` in the runtime), and never as part of the step itself. Being an
//! ordinary kernel of the plan, every backend compiles and runs it like any other: Cranelift
//! on the CPU, PTX on a GPU, the float64 interpreter for reference. It reads the gradient
//! once: the cost of the check is one pass over the gradients.

use super::{Buffer, FuncPlan, GradientCheck, Item, Kernel};
use crate::ir::{Binary, Func, Inst, Op, ReduceKind, Value};
use gdc_dsl::types::{Elem, Shape, Ty};

/// Appends the gradient check to `func` (an update function of parameters shaped `domain`)
/// and its plan `fplan`.
pub fn add(func: &mut Func, fplan: &mut FuncPlan, domain: Shape) {
    let grad_ty = Ty::num(domain.clone());
    let push =
        |func: &mut Func, op: Op, args: Vec<Value>, ty: Ty| func.push(Inst { op, args, ty: Some(ty), guard: None });
    let g = match func.values().find(|v| func.inst(*v).op == Op::Grad && func.inst(*v).guard.is_none()) {
        Some(g) if func.ty(g).shape == domain => g,
        _ => push(func, Op::Grad, vec![], grad_ty.clone()),
    };
    let zero = push(func, Op::Const(0.0), vec![], Ty::NUM);
    let one = push(func, Op::Const(1.0), vec![], Ty::NUM);
    let z = push(func, Op::Binary(Binary::Mul), vec![g, zero], grad_ty.clone());
    let finite = push(func, Op::Binary(Binary::Eq), vec![z, zero], Ty { elem: Elem::Bool, shape: domain.clone() });
    let bad = push(func, Op::Select, vec![finite, zero, one], grad_ty);
    let count = push(func, Op::Reduce(ReduceKind::Sum, None), vec![bad], Ty::NUM);
    fplan.host.extend([zero, one]);
    let id = fplan
        .items
        .iter()
        .map(|it| match it {
            Item::Kernel(k) => k.id,
            Item::Lib(l) => l.id,
        })
        .max()
        .map_or(0, |m| m + 1);
    fplan.items.push(Item::Kernel(Kernel {
        id,
        guard: None,
        domain,
        inputs: vec![(g, Buffer::Grad)],
        scalars: Vec::new(),
        body: vec![z, finite, bad, count],
        outputs: Vec::new(),
        reductions: vec![count],
    }));
    fplan.check = Some(GradientCheck { item: fplan.items.len() - 1, count });
}
