//! Algebraic simplification, each rewrite exact in IEEE arithmetic (no rewrite changes a
//! result, NaN and infinities included):
//!
//!   x + 0 => x    0 + x => x    x - 0 => x    x * 1 => x    1 * x => x    x / 1 => x
//!   x ^ 1 => x    -(-x) => x    !!c => c
//!   select(true, a, b) => a    select(false, a, b) => b    select(c, a, a) => a
//!   store s (load s)                 => (removed: the state is unchanged)
//!   store s (select(c, x, load s))   => store s x if c     (c a scalar: skip the write)
//!
//! A rewrite applies only when the result has the type the instruction had (no implicit
//! broadcast is lost). `x * 0 => 0` is NOT done: it is wrong for NaN and infinities.

use crate::ir::*;

pub fn run(m: &mut Module) {
    for func in m.funcs_mut() {
        simplify(func);
    }
}

fn is_const(func: &Func, v: Value, c: f64) -> bool {
    func.inst(v).op == Op::Const(c)
}

pub fn simplify(func: &mut Func) {
    let n = func.insts.len();
    let mut to: Vec<Value> = (0..n).map(Value::new).collect();
    let mut keep = vec![true; n];
    let mut appended = Vec::new();
    for i in 0..n {
        let inst = func.insts[i].clone();
        let args: Vec<Value> = inst.args.iter().map(|a| to[a.index()]).collect();
        let same_ty = |x: Value| func.insts[x.index()].ty == inst.ty;
        let replacement = match (&inst.op, args.as_slice()) {
            (Op::Binary(Binary::Add), [x, y]) if is_const(func, *y, 0.0) && same_ty(*x) => Some(*x),
            (Op::Binary(Binary::Add), [x, y]) if is_const(func, *x, 0.0) && same_ty(*y) => Some(*y),
            (Op::Binary(Binary::Sub), [x, y]) if is_const(func, *y, 0.0) && same_ty(*x) => Some(*x),
            (Op::Binary(Binary::Mul), [x, y]) if is_const(func, *y, 1.0) && same_ty(*x) => Some(*x),
            (Op::Binary(Binary::Mul), [x, y]) if is_const(func, *x, 1.0) && same_ty(*y) => Some(*y),
            (Op::Binary(Binary::Div), [x, y]) if is_const(func, *y, 1.0) && same_ty(*x) => Some(*x),
            (Op::Binary(Binary::Pow), [x, y]) if is_const(func, *y, 1.0) && same_ty(*x) => Some(*x),
            (Op::Unary(u @ (Unary::Neg | Unary::Not)), [x]) => match &func.inst(*x).op {
                Op::Unary(inner) if inner == u => Some(func.inst(*x).args[0]),
                _ => None,
            },
            (Op::Select, [c, a, b]) => match func.inst(*c).op {
                Op::Bool(true) if same_ty(*a) => Some(*a),
                Op::Bool(false) if same_ty(*b) => Some(*b),
                _ if a == b && same_ty(*a) => Some(*a),
                _ => None,
            },
            _ => None,
        };
        if let Some(r) = replacement {
            to[i] = to[r.index()];
            continue;
        }
        if let (Op::Store(Target::State(s)), [x]) = (&inst.op, args.as_slice()) {
            let x_inst = func.inst(*x);
            if x_inst.op == Op::Load(*s) {
                keep[i] = false;
            } else if x_inst.op == Op::Select {
                let (c, a, b) = (to[x_inst.args[0].index()], to[x_inst.args[1].index()], to[x_inst.args[2].index()]);
                let scalar_cond = func.ty(c).is_scalar();
                if scalar_cond && func.inst(b).op == Op::Load(*s) && func.ty(a) == func.ty(*x) {
                    keep[i] = false;
                    appended.push((Target::State(*s), a, c, inst.guard.map(|g| to[g.index()])));
                }
            }
        }
    }
    func.substitute(&to);
    for (target, value, cond, guard) in appended {
        let guard = match guard {
            Some(g) => func.push(Inst {
                op: Op::Binary(Binary::And),
                args: vec![g, cond],
                ty: Some(gdc_dsl::types::Ty::BOOL),
                guard: None,
            }),
            None => cond,
        };
        func.push(Inst { op: Op::Store(target), args: vec![value], ty: None, guard: Some(guard) });
        keep.push(true);
        keep.push(true);
    }
    keep.truncate(func.insts.len());
    keep.resize(func.insts.len(), true);
    func.retain(&keep);
}
