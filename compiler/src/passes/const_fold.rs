//! Constant folding: an operation whose arguments are all constants becomes a constant.
//!
//!   op(const a, const b) => const op(a, b)      (scalars, float64, as the interpreter computes)
//!   guard `bool true`    => no guard
//!
//! Folding happens in float64 and the result is rounded once to float32 by a float32
//! backend, where unfolded code would round each intermediate: `1 - 0.9` may differ in the
//! last float32 bit. Hyperparameters are never constants, so this only touches literals.

use crate::ir::*;

pub fn run(m: &mut Module) {
    for func in m.funcs_mut() {
        fold(func);
    }
}

fn constant(func: &Func, v: Value) -> Option<f64> {
    match func.inst(v).op {
        Op::Const(c) => Some(c),
        Op::Bool(b) => Some(f64::from(u8::from(b))),
        _ => None,
    }
}

pub fn fold(func: &mut Func) {
    for i in 0..func.insts.len() {
        let v = Value::new(i);
        if let Some(g) = func.inst(v).guard {
            if func.inst(g).op == Op::Bool(true) {
                func.insts[i].guard = None;
            }
        }
        let inst = func.inst(v);
        if inst.ty.as_ref().is_none_or(|t| !t.is_scalar()) {
            continue;
        }
        let args: Option<Vec<f64>> = inst.args.iter().map(|a| constant(func, *a)).collect();
        let Some(args) = args else { continue };
        let value = match (&inst.op, args.as_slice()) {
            (Op::Unary(u), [x]) => eval_unary(*u, *x),
            (Op::Binary(b), [x, y]) => eval_binary(*b, *x, *y),
            (Op::Select, [c, a, b]) => {
                if *c != 0.0 {
                    *a
                } else {
                    *b
                }
            }
            _ => continue,
        };
        let is_bool = inst.ty.as_ref().is_some_and(|t| *t == gdc_dsl::types::Ty::BOOL);
        let inst = &mut func.insts[i];
        inst.op = if is_bool { Op::Bool(value != 0.0) } else { Op::Const(value) };
        inst.args.clear();
        inst.guard = None;
    }
}
