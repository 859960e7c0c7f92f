//! One decomposition for an eigenbasis ordered by eigenvalue. SOAP (and any basis kept
//! largest-eigenvalue first) writes `eigvecs(m) @ sort_perm(eigvals(m))`: as written, two
//! eigendecompositions of m, a permutation matrix and an n³ product.
//!
//!   matmul(eigvecs(x), sort_perm(eigvals(x)))   => eigvecs.desc(x)
//!
//! when both decompositions have the same precision, the product is float32 (one that
//! rounds its operands to bf16 or TF32 would round the vectors: kept as written) and all four
//! instructions run under the same guard. Exact: a product with a permutation matrix moves
//! each column (x·1 plus zeros), and `eigvecs.desc` orders the same columns by the same
//! key; only a -0 entry stays -0 (the sum made it +0) and a NaN stays in its own column
//! instead of spreading through the product. The decompositions and the permutation are
//! left for DCE when nothing else uses them.

use crate::ir::*;

pub fn run(m: &mut Module) {
    for func in m.funcs_mut() {
        fuse(func);
    }
}

pub fn fuse(func: &mut Func) {
    for i in 0..func.insts.len() {
        if let Some(x) = ordered_basis(func, i) {
            let inst = &mut func.insts[i];
            inst.op = x.0;
            inst.args = vec![x.1];
        }
    }
}

/// The `eigvecs.desc` and its operand that instruction `i` computes, when it is the idiom.
fn ordered_basis(func: &Func, i: usize) -> Option<(Op, Value)> {
    let product = &func.insts[i];
    if product.op != (Op::MatMul { ta: false, tb: false, sym: false }) || !full_precision(func, product) {
        return None;
    }
    let vectors = func.inst(product.args[0]);
    let perm = func.inst(product.args[1]);
    let Op::Eigvecs(p) = vectors.op else { return None };
    if perm.op != Op::SortPerm {
        return None;
    }
    let values = func.inst(perm.args[0]);
    let same_input = values.op == Op::Eigvals(p) && values.args[0] == vectors.args[0];
    let same_guard = [vectors, perm, values].iter().all(|inst| inst.guard == product.guard);
    (same_input && same_guard).then_some((Op::EigvecsDesc(p), vectors.args[0]))
}

/// Whether a product keeps float32 operands: no precision operand, or a constant one of
/// float32's 24 bits or more.
fn full_precision(func: &Func, product: &Inst) -> bool {
    match product.args.get(2) {
        None => true,
        Some(bits) => matches!(func.inst(*bits).op, Op::Const(b) if b >= F32_BITS),
    }
}
