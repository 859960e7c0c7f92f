//! Symmetry inference: marks the matrix products whose result is symmetric, so a backend
//! computes one triangle and mirrors it (a SYRK-like product: half the multiply-adds).
//!
//!   matmul.nt(x, x), matmul.tn(x, x)       => .sym   (x xᵀ and xᵀ x)
//!   matmul(a, a) with a symmetric          => .sym   (a², whatever the transposes)
//!
//! A value is symmetric when it is a square matrix (the same dimension name twice) made by:
//! `eye`, `inv_root`, `outer(a, a)`, a `.sym` product, a transpose of a symmetric value, or
//! an elementwise operation whose tensor operands are all symmetric (scalars broadcast
//! evenly, so `b * gram + c * gram²` stays symmetric). Newton–Schulz's `x xᵀ` and its
//! square are both marked: a third of its multiply-adds saved.
//!
//! Exact in real arithmetic; in floating point the mirrored triangle equals its transpose
//! bit for bit, where a full product may differ from it by rounding.

use crate::ir::*;
use gdc_dsl::types::Shape;

pub fn run(m: &mut Module) {
    for func in m.funcs_mut() {
        mark(func);
    }
}

pub fn mark(func: &mut Func) {
    let mut symmetric = vec![false; func.insts.len()];
    for i in 0..func.insts.len() {
        let inst = &func.insts[i];
        let Some(ty) = &inst.ty else { continue };
        if !is_square(&ty.shape) {
            continue;
        }
        let sym_or_scalar = |v: &Value| symmetric[v.index()] || func.ty(*v).is_scalar();
        let args = &inst.args;
        let sym = match &inst.op {
            Op::Eye | Op::InvRoot(..) => true,
            Op::Outer => args[0] == args[1],
            Op::Transpose => symmetric[args[0].index()],
            Op::MatMul { ta, tb, .. } => args[0] == args[1] && (ta != tb || symmetric[args[0].index()]),
            Op::Unary(_) | Op::Binary(_) | Op::Select => args.iter().all(sym_or_scalar),
            Op::Broadcast => func.ty(args[0]).is_scalar(),
            _ => false,
        };
        symmetric[i] = sym;
        if let Op::MatMul { sym: flag, .. } = &mut func.insts[i].op {
            *flag = sym;
        }
    }
}

/// `[a, a]`: a matrix whose two dimensions are the same size by name.
fn is_square(shape: &Shape) -> bool {
    shape.rank2().is_some_and(|(a, b)| a == b)
}
