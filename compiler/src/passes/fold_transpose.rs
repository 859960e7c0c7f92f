//! Transpose folding: a matrix product reads a transposed operand in place, as BLAS does,
//! instead of a transpose being materialised first.
//!
//!   matmul(transpose(x), y)      => matmul.tn(x, y)
//!   matmul(x, transpose(y))      => matmul.nt(x, y)
//!   matmul.tn(transpose(x), y)   => matmul(x, y)      (and likewise for the other operand)
//!   matmul(transpose(transpose(x)), y) => matmul(x, y) (chains fold all the way)
//!
//! Exact: only the order in which the same products are read changes nothing. The transpose
//! itself is left for DCE when nothing else uses it.

use crate::ir::*;

pub fn run(m: &mut Module) {
    for func in m.funcs_mut() {
        fold(func);
    }
}

pub fn fold(func: &mut Func) {
    for i in 0..func.insts.len() {
        let Op::MatMul { ta, tb, sym } = func.insts[i].op else { continue };
        let (mut ta, mut tb) = (ta, tb);
        let mut args = func.insts[i].args.clone();
        for (k, flag) in [(0, &mut ta), (1, &mut tb)] {
            // Through any chain of transposes: x.T.T reads x straight.
            while func.inst(args[k]).op == Op::Transpose {
                args[k] = func.inst(args[k]).args[0];
                *flag = !*flag;
            }
        }
        func.insts[i].op = Op::MatMul { ta, tb, sym };
        func.insts[i].args = args;
    }
}
