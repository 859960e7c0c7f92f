//! Library calls of the CPU backend: matrix products through the `gemm` crate in float32;
//! transposes and outer products directly; eigendecompositions, QR, inverse roots and
//! sort permutations through the reference interpreter's float64 routines (exact, not yet
//! fast — the subject of the curvature-aware optimizers' own work).

#![allow(unsafe_code)]

use crate::RuntimeError;
use gdc_compiler::interp;
use gdc_compiler::ir::Op;

fn internal(msg: String) -> RuntimeError {
    RuntimeError::Step(interp::InterpError::Internal(msg))
}

/// An operand: its data and its size per dimension.
pub type Operand<'a> = (&'a [f32], Vec<usize>);

/// Runs one matrix instruction on its operands into `out` (its result's length); a matrix
/// product writes `out` directly and may use `threads` threads of the current rayon pool.
pub fn run(op: &Op, args: &[Operand], out: &mut [f32], threads: usize) -> Result<(), RuntimeError> {
    let arg = |i: usize| args.get(i).ok_or_else(|| internal(format!("{op:?} is missing operand {i}")));
    if let Op::MatMul { ta, tb } = op {
        let (a, b) = (arg(0)?, arg(1)?);
        return matmul(a.0, &a.1, *ta, b.0, &b.1, *tb, out, threads);
    }
    let result = other(op, args)?;
    if result.len() != out.len() {
        return Err(internal(format!("{op:?} gives {} values for a buffer of {}", result.len(), out.len())));
    }
    out.copy_from_slice(&result);
    Ok(())
}

/// Every library call but the product, as a new vector.
fn other(op: &Op, args: &[Operand]) -> Result<Vec<f32>, RuntimeError> {
    let wide = |x: &[f32]| x.iter().map(|v| f64::from(*v)).collect::<Vec<f64>>();
    let narrow = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    let arg = |i: usize| args.get(i).ok_or_else(|| internal(format!("{op:?} is missing operand {i}")));
    Ok(match op {
        Op::Transpose => {
            let a = arg(0)?;
            let (r, c) = dims2(&a.1)?;
            (0..r * c).map(|idx| a.0[(idx % r) * c + idx / r]).collect()
        }
        Op::Outer => {
            let (a, b) = (arg(0)?, arg(1)?);
            a.0.iter().flat_map(|x| b.0.iter().map(move |y| x * y)).collect()
        }
        Op::InvRoot => {
            let (a, k) = (arg(0)?, arg(1)?);
            let (n, _) = dims2(&a.1)?;
            narrow(interp::inv_root(&wide(a.0), n, f64::from(k.0[0])))
        }
        Op::Eigvecs | Op::Eigvals => {
            let a = arg(0)?;
            let (n, _) = dims2(&a.1)?;
            let (values, vectors) = interp::sorted_eigen(&wide(a.0), n);
            narrow(if *op == Op::Eigvals { values } else { vectors })
        }
        Op::Qr => {
            let a = arg(0)?;
            let (r, c) = dims2(&a.1)?;
            narrow(interp::qr(&wide(a.0), r, c))
        }
        Op::SortPerm => narrow(interp::sort_perm(&wide(arg(0)?.0))),
        other => return Err(internal(format!("{other:?} is not a library call"))),
    })
}

fn dims2(sizes: &[usize]) -> Result<(usize, usize), RuntimeError> {
    match sizes {
        [r, c] => Ok((*r, *c)),
        _ => Err(internal(format!("expected a matrix, got sizes {sizes:?}"))),
    }
}

/// `out = op(a) @ op(b)` for row-major operands; a vector operand is a row (left) or a
/// column (right), as the language's `@` types it.
#[allow(clippy::too_many_arguments)]
fn matmul(
    a: &[f32],
    asz: &[usize],
    ta: bool,
    b: &[f32],
    bsz: &[usize],
    tb: bool,
    out: &mut [f32],
    threads: usize,
) -> Result<(), RuntimeError> {
    // (rows, cols, row stride, col stride) of op(x) over x's row-major storage.
    let view = |sz: &[usize], t: bool, left: bool| -> (usize, usize, isize, isize) {
        match sz {
            [r, c] if !t => (*r, *c, *c as isize, 1),
            [r, c] => (*c, *r, 1, *c as isize),
            [n] if left => (1, *n, *n as isize, 1),
            [n] => (*n, 1, 1, 1),
            _ => (0, 0, 0, 0),
        }
    };
    let (m, k, a_rs, a_cs) = view(asz, ta, true);
    let (k2, n, b_rs, b_cs) = view(bsz, tb, false);
    if k != k2
        || a.len() != asz.iter().product::<usize>()
        || b.len() != bsz.iter().product::<usize>()
        || out.len() != m * n
    {
        return Err(internal(format!("matmul of {asz:?} and {bsz:?} does not fit")));
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY: the views stay inside `a` (m x k), `b` (k x n) and `out` (m x n, row-major),
    // whose lengths were checked above; `out` is written, not read (`read_dst` false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
        );
    }
    Ok(())
}
