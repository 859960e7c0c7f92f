//! Library calls of the CPU backend, through faer: matrix products in float32 (a product
//! the compiler proved symmetric computes its lower triangle only and mirrors it, a
//! SYRK-like product at half the cost); eigendecompositions, inverse roots (through an
//! eigendecomposition, or `method = newton`'s coupled Newton iteration of symmetric products)
//! and QR in the precision the source asks for (`precision = f32 | f64`, float64 by
//! default); transposes, outer products and sort permutations directly.

use crate::RuntimeError;
use faer::linalg::matmul::triangular::{matmul as triangular_matmul, BlockStructure};
use faer::traits::RealField;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use gdc_compiler::interp;
use gdc_compiler::ir::{round_significand, Op, Precision, RootMethod, BF16_BITS, F32_BITS};
use std::num::NonZeroUsize;

fn internal(msg: String) -> RuntimeError {
    RuntimeError::Step(interp::InterpError::Internal(msg))
}

/// An operand: its data and its size per dimension.
pub type Operand<'a> = (&'a [f32], Vec<usize>);

/// Runs one matrix instruction on its operands into `out` (its result's length); a matrix
/// product (and a Newton inverse root) may use `threads` threads of the current rayon pool,
/// a decomposition the pool. Returns the floating-point operations it executed: [`flops`],
/// or for a Newton inverse root the products its iterations took.
pub fn run(op: &Op, args: &[Operand], out: &mut [f32], threads: usize) -> Result<u64, RuntimeError> {
    let sizes: Vec<&[usize]> = args.iter().map(|a| &a.1[..]).collect();
    let counted = flops(op, &sizes);
    match run_op(op, args, out, threads)? {
        Some(newton) => Ok(newton),
        None => Ok(counted),
    }
}

/// [`run`], returning the operations only where they are not [`flops`]'s static count.
fn run_op(op: &Op, args: &[Operand], out: &mut [f32], threads: usize) -> Result<Option<u64>, RuntimeError> {
    let arg = |i: usize| args.get(i).ok_or_else(|| internal(format!("{op:?} is missing operand {i}")));
    let square = |i: usize| -> Result<(&[f32], usize), RuntimeError> {
        let a = arg(i)?;
        match a.1[..] {
            [r, c] if r == c && a.0.len() == r * c => Ok((a.0, r)),
            _ => Err(internal(format!("{op:?} needs a square matrix, got sizes {:?}", a.1))),
        }
    };
    let expect = |len: usize| {
        if out.len() == len {
            Ok(())
        } else {
            Err(internal(format!("{op:?} gives {len} values for a buffer of {}", out.len())))
        }
    };
    match op {
        Op::MatMul { ta, tb, sym } => {
            let (a, b) = (arg(0)?, arg(1)?);
            let bits = args.get(2).map_or(F32_BITS, |p| f64::from(p.0.first().copied().unwrap_or(f32::NAN)));
            matmul(a, *ta, b, *tb, *sym, bits, out, threads).map(|()| None)
        }
        Op::Transpose => {
            let a = arg(0)?;
            let (r, c) = dims2(&a.1)?;
            expect(r * c)?;
            transpose(a.0, r, c, out, threads);
            Ok(None)
        }
        Op::Outer => {
            let (a, b) = (arg(0)?, arg(1)?);
            expect(a.0.len() * b.0.len())?;
            for (row, x) in out.chunks_mut(b.0.len().max(1)).zip(a.0) {
                for (o, y) in row.iter_mut().zip(b.0) {
                    *o = x * y;
                }
            }
            Ok(None)
        }
        Op::InvRoot(p, method) => {
            let ((a, n), k) = (square(0)?, arg(1)?);
            expect(n * n)?;
            let k = f64::from(k.0.first().copied().unwrap_or(f32::NAN));
            // Newton's products, then (when it falls back) the eigendecomposition's count.
            let mut spent = None;
            if *method == RootMethod::Newton {
                let (converged, flops) = match p {
                    Precision::F32 => newton_root::<f32>(a, n, k, par(threads), out),
                    Precision::F64 => newton_root::<f64>(a, n, k, par(threads), out),
                };
                if converged {
                    return Ok(Some(flops));
                }
                spent = Some(flops + inv_root_flops(n as u64));
            }
            match p {
                Precision::F32 => inv_root::<f32>(a, n, k, out),
                Precision::F64 => inv_root::<f64>(a, n, k, out),
            }
            .map(|()| spent)
        }
        Op::Eigvecs(p) | Op::Eigvals(p) => {
            let (a, n) = square(0)?;
            let vectors = matches!(op, Op::Eigvecs(_));
            expect(if vectors { n * n } else { n })?;
            match p {
                Precision::F32 => eigen::<f32>(a, n, vectors, out),
                Precision::F64 => eigen::<f64>(a, n, vectors, out),
            }
            .map(|()| None)
        }
        Op::EigvecsDesc(p) => {
            let (a, n) = square(0)?;
            expect(n * n)?;
            match p {
                Precision::F32 => eigvecs_desc::<f32>(a, n, out),
                Precision::F64 => eigvecs_desc::<f64>(a, n, out),
            }
            .map(|()| None)
        }
        Op::Qr(p) => {
            let a = arg(0)?;
            let (r, c) = dims2(&a.1)?;
            expect(r * c)?;
            match p {
                Precision::F32 => qr::<f32>(a.0, r, c, out),
                Precision::F64 => qr::<f64>(a.0, r, c, out),
            }
            .map(|()| None)
        }
        Op::SortPerm => {
            let key: Vec<f64> = arg(0)?.0.iter().map(|v| f64::from(*v)).collect();
            expect(key.len() * key.len())?;
            for (o, v) in out.iter_mut().zip(interp::sort_perm(&key)) {
                *o = v as f32;
            }
            Ok(None)
        }
        // Per-axis state: the operand's sizes are the member's axes (`shared::operand_sizes`).
        Op::AxisMin => {
            let (acc, dims) = arg(0)?;
            expect(dims.iter().product())?;
            if acc.len() != dims.iter().sum::<usize>() {
                return Err(internal(format!("axis_min of {} entries for axes {dims:?}", acc.len())));
            }
            interp::axis_min(dims, acc, out, |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.min(b) });
            Ok(None)
        }
        Op::AxisMax => {
            let (x, dims) = arg(0)?;
            expect(dims.iter().sum())?;
            if x.len() != dims.iter().product::<usize>() {
                return Err(internal(format!("axis_max of {} elements for axes {dims:?}", x.len())));
            }
            let max = |a: f32, b: f32| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) };
            interp::axis_max(dims, x, out, f32::NEG_INFINITY, max);
            Ok(None)
        }
        other => Err(internal(format!("{other:?} is not a library call"))),
    }
}

/// The floating-point operations one library call executes, by the usual counts: a product
/// 2mkn (a symmetric one m(m+1)k, its lower triangle); a symmetric eigendecomposition with
/// vectors 9n³ (Golub & Van Loan, the symmetric QR algorithm); an inverse root that plus
/// n(n+1)n for W Wᵀ; a Householder QR with its thin Q 4rc² − 4c³/3 (r ≥ c; LAPACK's
/// geqrf + orgqr). Transposes, outer products and permutations move data: counted 0. A
/// Newton inverse root's count depends on its iterations: [`run`] returns it (this is its
/// fallback's).
pub fn flops(op: &Op, sizes: &[&[usize]]) -> u64 {
    let dim = |a: usize, d: usize| sizes.get(a).and_then(|s| s.get(d)).copied().unwrap_or(0) as u64;
    let matrix = |a: usize| match sizes.get(a).map(|s| s.len()) {
        Some(2) => (dim(a, 0), dim(a, 1)),
        Some(1) => (1, dim(a, 0)),
        _ => (0, 0),
    };
    match op {
        Op::MatMul { ta, tb, sym } => {
            let (ar, ac) = matrix(0);
            let (m, k) = if *ta { (ac, ar) } else { (ar, ac) };
            let (br, bc) = if sizes.get(1).map(|s| s.len()) == Some(1) { (dim(1, 0), 1) } else { matrix(1) };
            let n = if *tb { br } else { bc };
            if *sym {
                m * (m + 1) * k
            } else {
                2 * m * k * n
            }
        }
        Op::Eigvecs(_) | Op::Eigvals(_) | Op::EigvecsDesc(_) => 9 * dim(0, 0).pow(3),
        Op::InvRoot(..) => inv_root_flops(dim(0, 0)),
        Op::Qr(_) => {
            let (r, c) = matrix(0);
            let (r, c) = (r.max(c), r.min(c));
            (4 * r * c * c).saturating_sub(4 * c.pow(3) / 3)
        }
        _ => 0,
    }
}

/// An eigendecomposition's inverse root of an n x n matrix: 9n³ + n(n+1)n (see [`flops`]).
fn inv_root_flops(n: u64) -> u64 {
    9 * n.pow(3) + n * (n + 1) * n
}

fn dims2(sizes: &[usize]) -> Result<(usize, usize), RuntimeError> {
    match sizes {
        [r, c] => Ok((*r, *c)),
        _ => Err(internal(format!("expected a matrix, got sizes {sizes:?}"))),
    }
}

fn par(threads: usize) -> Par {
    NonZeroUsize::new(threads).filter(|t| t.get() > 1).map_or(Par::Seq, Par::Rayon)
}

/// `out = op(a) @ op(b)` for row-major operands; a vector operand is a row (left) or a
/// column (right), as the language's `@` types it. With `sym`, only the lower triangle is
/// computed and then mirrored.
#[allow(clippy::too_many_arguments)]
fn matmul(
    a: &Operand,
    ta: bool,
    b: &Operand,
    tb: bool,
    sym: bool,
    bits: f64,
    out: &mut [f32],
    threads: usize,
) -> Result<(), RuntimeError> {
    fn view<'a>(x: &Operand<'a>, t: bool, left: bool) -> Option<MatRef<'a, f32>> {
        let m = match x.1[..] {
            [r, c] => MatRef::from_row_major_slice(x.0.get(..r * c)?, r, c),
            [n] if left => MatRef::from_row_major_slice(x.0.get(..n)?, 1, n),
            [n] => MatRef::from_row_major_slice(x.0.get(..n)?, n, 1),
            _ => return None,
        };
        Some(if t { m.transpose() } else { m })
    }
    let misfit = || internal(format!("matmul of {:?} and {:?} does not fit", a.1, b.1));
    let (lhs, rhs) = (view(a, ta, true).ok_or_else(misfit)?, view(b, tb, false).ok_or_else(misfit)?);
    let (m, k, n) = (lhs.nrows(), lhs.ncols(), rhs.ncols());
    if rhs.nrows() != k || out.len() != m * n || (sym && m != n) {
        return Err(misfit());
    }
    if bits == BF16_BITS && bf16_native() {
        #[cfg(target_arch = "x86_64")]
        crate::bf16_gemm::matmul(lhs, rhs, out, sym, threads);
        return Ok(());
    }
    if bits != F32_BITS {
        // bf16 without `avx512_bf16`, or TF32: the operands rounded (once when both are one
        // buffer, as a Gram matrix's), then an exact float32 product of the rounded values.
        let round = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| round_significand(*v, bits)).collect() };
        let ra = round(a.0);
        let rb = if std::ptr::eq(a.0, b.0) { None } else { Some(round(b.0)) };
        let ra_op = (&ra[..], a.1.clone());
        let rb_op = (rb.as_deref().unwrap_or(&ra), b.1.clone());
        return matmul(&ra_op, ta, &rb_op, tb, sym, F32_BITS, out, threads);
    }
    let mut dst = MatMut::from_row_major_slice_mut(out, m, n);
    if sym {
        let rect = BlockStructure::Rectangular;
        triangular_matmul(
            dst.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            lhs,
            rect,
            rhs,
            rect,
            1.0,
            par(threads),
        );
        mirror_lower(out, n);
    } else {
        faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0, par(threads));
    }
    Ok(())
}

/// Whether bf16 products run on `avx512_bf16` (`bf16_gemm`); `GDC_NO_BF16_KERNEL=1` turns it
/// off (to compare with the rounded-operand float32 product).
fn bf16_native() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *NATIVE.get_or_init(|| crate::bf16_gemm::available() && std::env::var_os("GDC_NO_BF16_KERNEL").is_none())
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out` (c x r) = the transpose of the row-major r x c matrix `a`: 16 x 16 blocks through
/// a local buffer, so that reads and writes both run along rows (element by element, the
/// column walk took a cache line per element: 7% of a 2-thread Muon step on 4096x1024),
/// bands of 16 output rows on the current rayon pool when `threads` > 1.
fn transpose(a: &[f32], r: usize, c: usize, out: &mut [f32], threads: usize) {
    use rayon::prelude::*;
    const T: usize = 16;
    if r == 0 || c == 0 {
        return;
    }
    let band = |j0: usize, rows: &mut [f32]| {
        let jn = rows.len() / r;
        let mut block = [[0f32; T]; T];
        for i0 in (0..r).step_by(T) {
            let iend = (i0 + T).min(r);
            for i in i0..iend {
                for (j, v) in a[i * c + j0..i * c + j0 + jn].iter().enumerate() {
                    block[j][i - i0] = *v;
                }
            }
            for j in 0..jn {
                rows[j * r + i0..j * r + iend].copy_from_slice(&block[j][..iend - i0]);
            }
        }
    };
    if threads > 1 {
        out.par_chunks_mut(T * r).enumerate().for_each(|(b, rows)| band(b * T, rows));
    } else {
        out.chunks_mut(T * r).enumerate().for_each(|(b, rows)| band(b * T, rows));
    }
}

/// Copies the lower triangle of the row-major n x n matrix onto its upper triangle through
/// 16 x 16 blocks in a local buffer (as [`transpose`]): a column walk strides by the row
/// length, 4 KiB for 1024 columns, one L1 set for every element. `bf16_gemm` does the same
/// in parallel for its own symmetric products.
fn mirror_lower(x: &mut [f32], n: usize) {
    const T: usize = 16;
    let mut block = [[0f32; T]; T];
    for rb in (0..n).step_by(T) {
        let rend = (rb + T).min(n);
        for cb in (0..rend).step_by(T) {
            let cend = (cb + T).min(n);
            for r in rb..rend {
                for c in cb..cend.min(r) {
                    block[c - cb][r - rb] = x[r * n + c];
                }
            }
            for c in cb..cend {
                let from = rb.max(c + 1);
                if from < rend {
                    x[c * n + from..c * n + rend].copy_from_slice(&block[c - cb][from - rb..rend - rb]);
                }
            }
        }
    }
}

/// The float types decompositions run in.
trait Real: RealField + Copy {
    fn of(x: f32) -> Self;
    fn f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
    const EPSILON: f64;
    const PRECISION: Precision;
}

impl Real for f32 {
    fn of(x: f32) -> f32 {
        x
    }
    fn f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    const EPSILON: f64 = f32::EPSILON as f64;
    const PRECISION: Precision = Precision::F32;
}

impl Real for f64 {
    fn of(x: f32) -> f64 {
        f64::from(x)
    }
    fn f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> f64 {
        x
    }
    const EPSILON: f64 = f64::EPSILON;
    const PRECISION: Precision = Precision::F64;
}

/// Eigenvalues (ascending) and eigenvectors (columns) of the symmetric part of `a`.
fn symmetric_eigen<T: Real>(a: &[f32], n: usize) -> Result<(Vec<f64>, Mat<T>), RuntimeError> {
    if !a.iter().all(|v| v.is_finite()) {
        // faer's iteration needs finite input; a non-finite statistic gives non-finite results.
        return Ok((vec![f64::NAN; n], Mat::from_fn(n, n, |_, _| T::from_f64(f64::NAN))));
    }
    let s = Mat::<T>::from_fn(n, n, |i, j| T::from_f64(0.5 * (f64::from(a[i * n + j]) + f64::from(a[j * n + i]))));
    let evd = s
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| internal(format!("the eigendecomposition of a {n} x {n} matrix did not converge: {e:?}")))?;
    let values = (0..n).map(|i| evd.S().column_vector()[i].f64()).collect();
    Ok((values, evd.U().to_owned()))
}

fn eigen<T: Real>(a: &[f32], n: usize, vectors: bool, out: &mut [f32]) -> Result<(), RuntimeError> {
    let (values, u) = symmetric_eigen::<T>(a, n)?;
    if vectors {
        for (idx, o) in out.iter_mut().enumerate() {
            *o = u[(idx / n, idx % n)].f64() as f32;
        }
    } else {
        for (o, v) in out.iter_mut().zip(values) {
            *o = v as f32;
        }
    }
    Ok(())
}

/// `eigvecs.desc`: one decomposition's vectors, ordered by its values as `eigvals` writes
/// them (float32) and `sort_perm` orders them, so the result is `eigvecs(m) @
/// sort_perm(eigvals(m))`'s, column for column.
fn eigvecs_desc<T: Real>(a: &[f32], n: usize, out: &mut [f32]) -> Result<(), RuntimeError> {
    let (values, u) = symmetric_eigen::<T>(a, n)?;
    let key: Vec<f64> = values.iter().map(|v| f64::from(*v as f32)).collect();
    let vectors: Vec<f32> = (0..n * n).map(|idx| u[(idx / n, idx % n)].f64() as f32).collect();
    out.copy_from_slice(&interp::permute_columns(&vectors, n, &interp::sort_order(&key)));
    Ok(())
}

/// m^(-1/k) on m's numerical range (interp::inv_root's rule with the epsilon of `T`):
/// with f(l) = l^(-1/k) above the cutoff and 0 below, W = V diag(sqrt f) and the result is
/// W Wᵀ, a symmetric product (lower triangle, mirrored).
fn inv_root<T: Real>(a: &[f32], n: usize, k: f64, out: &mut [f32]) -> Result<(), RuntimeError> {
    let (values, u) = symmetric_eigen::<T>(a, n)?;
    let cutoff = n as f64 * T::EPSILON * values.iter().fold(0.0f64, |acc, l| acc.max(*l));
    let scale: Vec<T> = values.iter().map(|l| T::from_f64(if *l > cutoff { l.powf(-0.5 / k) } else { 0.0 })).collect();
    let w = Mat::<T>::from_fn(n, n, |i, j| u[(i, j)] * scale[j]);
    let mut r = Mat::<T>::zeros(n, n);
    let rect = BlockStructure::Rectangular;
    let par = faer::get_global_parallelism();
    triangular_matmul(
        r.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        w.as_ref(),
        rect,
        w.transpose(),
        rect,
        T::of(1.0),
        par,
    );
    for (idx, o) in out.iter_mut().enumerate() {
        let (i, j) = (idx / n, idx % n);
        *o = (if j <= i { r[(i, j)] } else { r[(j, i)] }).f64() as f32;
    }
    Ok(())
}

/// m^(-1/k) by the coupled Newton iteration of [`RootMethod::Newton`] in precision `T`, its
/// products on `par`: every matrix of the iteration is a polynomial in the symmetric part of
/// `a`, so each product is symmetric and computes its lower triangle only (half the cost),
/// mirrored. Returns whether it converged (then it wrote the root; otherwise nothing, and
/// the method falls back to the eigendecomposition) and the operations it took.
fn newton_root<T: Real>(a: &[f32], n: usize, k: f64, par: Par, out: &mut [f32]) -> (bool, u64) {
    let Some(power) = interp::newton_power(k) else { return (false, 0) };
    let sym = |i: usize, j: usize| 0.5 * (f64::from(a[i * n + j]) + f64::from(a[j * n + i]));
    let norm = (0..n * n).map(|i| sym(i / n, i % n).powi(2)).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return (false, 0);
    }
    let z = (k + 1.0) / (2.0 * norm);
    let (diag, inv_k) = (T::from_f64(1.0 + 1.0 / k), T::from_f64(1.0 / k));
    let mut x = Mat::<T>::from_fn(n, n, |i, j| T::from_f64(if i == j { z.powf(1.0 / k) } else { 0.0 }));
    let mut m = Mat::<T>::from_fn(n, n, |i, j| T::from_f64(z * sym(i, j)));
    let distance = |m: &Mat<T>| {
        let mut d = 0.0f64;
        for j in 0..n {
            for i in 0..n {
                d = d.max((m[(i, j)].f64() - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
        d
    };
    let tolerance = RootMethod::newton_tolerance(T::PRECISION);
    let mut error = distance(&m);
    let start = error.max(1.0);
    let mut products = 0u64;
    let product = |x: &Mat<T>, y: &Mat<T>, products: &mut u64| {
        *products += 1;
        symmetric_product(x, y, par)
    };
    let flops = |products: u64| products * (n as u64) * (n as u64 + 1) * (n as u64);
    let mut iterations = 0;
    while error > tolerance {
        if iterations == RootMethod::NEWTON_MAX_ITERATIONS {
            return (false, flops(products));
        }
        iterations += 1;
        let p = Mat::<T>::from_fn(n, n, |i, j| if i == j { diag - m[(i, j)] * inv_k } else { -(m[(i, j)] * inv_k) });
        x = product(&x, &p, &mut products);
        // p^power by squaring.
        let (mut acc, mut base, mut e) = (None::<Mat<T>>, p, power);
        loop {
            if e & 1 == 1 {
                acc = Some(match acc {
                    None => base.clone(),
                    Some(r) => product(&r, &base, &mut products),
                });
            }
            e >>= 1;
            if e == 0 {
                break;
            }
            base = product(&base, &base, &mut products);
        }
        m = product(&acc.expect("power >= 1"), &m, &mut products);
        error = distance(&m);
        if !(error.is_finite() && error <= 2.0 * start) {
            return (false, flops(products));
        }
    }
    for (idx, o) in out.iter_mut().enumerate() {
        *o = x[(idx / n, idx % n)].f64() as f32;
    }
    (true, flops(products))
}

/// x y for n x n matrices whose product is symmetric: the lower triangle, mirrored.
fn symmetric_product<T: Real>(x: &Mat<T>, y: &Mat<T>, par: Par) -> Mat<T> {
    let n = x.nrows();
    let mut r = Mat::<T>::zeros(n, n);
    let rect = BlockStructure::Rectangular;
    triangular_matmul(
        r.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        x.as_ref(),
        rect,
        y.as_ref(),
        rect,
        T::of(1.0),
        par,
    );
    for i in 0..n {
        for j in i + 1..n {
            r[(i, j)] = r[(j, i)];
        }
    }
    r
}

/// The Q of a = Q R with R's diagonal non-negative, of a's shape (a wide matrix's columns
/// past its rank are zero), as interp::qr defines it.
fn qr<T: Real>(a: &[f32], r: usize, c: usize, out: &mut [f32]) -> Result<(), RuntimeError> {
    let m = Mat::<T>::from_fn(r, c, |i, j| T::of(a[i * c + j]));
    let rank = r.min(c);
    out.fill(0.0);
    if rank == 0 {
        return Ok(());
    }
    if !a.iter().all(|v| v.is_finite()) {
        out.fill(f32::NAN);
        return Ok(());
    }
    let f = m.qr();
    let q = f.compute_thin_Q();
    let rf = f.thin_R();
    for j in 0..rank {
        let sign = if rf[(j, j)].f64() < 0.0 { -1.0 } else { 1.0 };
        for i in 0..r {
            out[i * c + j] = (sign * q[(i, j)].f64()) as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_transposes_are_transposes() {
        for (r, c) in [(1, 1), (3, 50), (37, 17), (40, 33), (16, 16), (1, 40)] {
            let a: Vec<f32> = (0..r * c).map(|x| x as f32).collect();
            for threads in [1, 2] {
                let mut out = vec![f32::NAN; r * c];
                transpose(&a, r, c, &mut out, threads);
                for i in 0..r {
                    for j in 0..c {
                        assert_eq!(out[j * r + i], a[i * c + j], "{r}x{c} ({i}, {j}), {threads} threads");
                    }
                }
            }
        }
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn a_symmetric_product_equals_the_full_one_and_is_exactly_symmetric() {
        let (m, k) = (37, 53);
        let x = noise(m * k, 3);
        let full_op = Op::MatMul { ta: false, tb: true, sym: false };
        let sym_op = Op::MatMul { ta: false, tb: true, sym: true };
        let args = [(&x[..], vec![m, k]), (&x[..], vec![m, k])];
        let (mut full, mut sym) = (vec![0.0; m * m], vec![0.0; m * m]);
        run(&full_op, &args, &mut full, 1).expect("full");
        run(&sym_op, &args, &mut sym, 1).expect("sym");
        for i in 0..m {
            for j in 0..m {
                assert_eq!(sym[i * m + j], sym[j * m + i], "({i}, {j})");
                assert!((sym[i * m + j] - full[i * m + j]).abs() <= 1e-4 * (1.0 + full[i * m + j].abs()));
            }
        }
    }

    #[test]
    fn decompositions_agree_with_the_interpreter_in_both_precisions() {
        let n = 24;
        let x = noise(n * n, 9);
        // A symmetric positive definite matrix: x xT + I.
        let mut s = vec![0.0f32; n * n];
        run(&Op::MatMul { ta: false, tb: true, sym: true }, &[(&x[..], vec![n, n]), (&x[..], vec![n, n])], &mut s, 1)
            .expect("product");
        for i in 0..n {
            s[i * n + i] += 1.0;
        }
        let wide: Vec<f64> = s.iter().map(|v| f64::from(*v)).collect();
        let oracle_root = interp::inv_root(&wide, n, 4.0);
        let oracle_q = interp::qr(&wide, n, n);
        let (oracle_vals, _) = interp::sorted_eigen(&wide, n);
        for (p, tol) in [(Precision::F64, 1e-5), (Precision::F32, 1e-3)] {
            let mut root = vec![0.0; n * n];
            run(&Op::InvRoot(p, RootMethod::Eigh), &[(&s[..], vec![n, n]), (&[4.0][..], vec![])], &mut root, 1)
                .expect("inv_root");
            let mut q = vec![0.0; n * n];
            run(&Op::Qr(p), &[(&s[..], vec![n, n])], &mut q, 1).expect("qr");
            let mut vals = vec![0.0; n];
            run(&Op::Eigvals(p), &[(&s[..], vec![n, n])], &mut vals, 1).expect("eigvals");
            let close = |a: &[f32], b: &[f64], what: &str| {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!((f64::from(*x) - y).abs() <= tol * (1.0 + y.abs()), "{what} {p:?} [{i}]: {x} vs {y}");
                }
            };
            close(&root, &oracle_root, "inv_root");
            close(&q, &oracle_q, "qr");
            close(&vals, &oracle_vals, "eigvals");
        }
    }

    /// `eigvecs.desc` is the idiom it replaces, `eigvecs(m) @ sort_perm(eigvals(m))`, bit for
    /// bit, in both precisions, on a rank-deficient matrix and on a diagonal one with
    /// repeated eigenvalues (ties keep their order).
    #[test]
    fn ordered_eigenbasis_is_the_written_out_idiom_bit_for_bit() {
        let n = 20;
        let x = noise(n * 6, 5);
        // Rank 6: x xT (n x 6 times its transpose).
        let mut low_rank = vec![0.0f32; n * n];
        let gram = Op::MatMul { ta: false, tb: true, sym: true };
        run(&gram, &[(&x[..], vec![n, 6]), (&x[..], vec![n, 6])], &mut low_rank, 1).expect("product");
        let diagonal: Vec<f32> =
            (0..n * n).map(|e| if e % (n + 1) == 0 { [3.0, 1.0, 2.0, 3.0][e % 4] } else { 0.0 }).collect();
        let shape = vec![n, n];
        for (s, p) in [
            (&low_rank, Precision::F64),
            (&low_rank, Precision::F32),
            (&diagonal, Precision::F64),
            (&diagonal, Precision::F32),
        ] {
            let (mut vecs, mut vals, mut perm, mut want, mut got) =
                (vec![0.0; n * n], vec![0.0; n], vec![0.0; n * n], vec![0.0; n * n], vec![0.0; n * n]);
            run(&Op::Eigvecs(p), &[(&s[..], shape.clone())], &mut vecs, 1).expect("eigvecs");
            run(&Op::Eigvals(p), &[(&s[..], shape.clone())], &mut vals, 1).expect("eigvals");
            run(&Op::SortPerm, &[(&vals[..], vec![n])], &mut perm, 1).expect("sort_perm");
            let product = Op::MatMul { ta: false, tb: false, sym: false };
            run(&product, &[(&vecs[..], shape.clone()), (&perm[..], shape.clone())], &mut want, 1).expect("product");
            run(&Op::EigvecsDesc(p), &[(&s[..], shape.clone())], &mut got, 1).expect("eigvecs.desc");
            let bits = |v: &[f32]| v.iter().map(|x| (x + 0.0).to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{p:?}");
            if s == &diagonal {
                assert!(vals.windows(2).any(|w| w[0] == w[1]), "the test wants a tie: {vals:?}");
            }
        }
    }

    #[test]
    fn flops_count_symmetric_products_at_half() {
        let sizes: [&[usize]; 2] = [&[32, 64], &[32, 64]];
        assert_eq!(flops(&Op::MatMul { ta: false, tb: true, sym: false }, &sizes), 2 * 32 * 64 * 32);
        assert_eq!(flops(&Op::MatMul { ta: false, tb: true, sym: true }, &sizes), 32 * 33 * 64);
        assert_eq!(flops(&Op::MatMul { ta: true, tb: false, sym: true }, &sizes), 64 * 65 * 32);
        assert_eq!(flops(&Op::Eigvecs(Precision::F32), &[&[10, 10]]), 9000);
        assert_eq!(flops(&Op::Qr(Precision::F64), &[&[30, 10]]), 4 * 30 * 100 - 4000 / 3);
    }

    /// Q diag(l) Qᵀ for a random orthogonal Q and eigenvalues from 1 down to 1/cond
    /// (log-spaced), and its exact inverse fourth root Q diag(l^(-1/4)) Qᵀ, in float64.
    fn conditioned(n: usize, cond: f64) -> (Vec<f32>, Vec<f64>) {
        let x: Vec<f64> = noise(n * n, 17).iter().map(|v| f64::from(*v)).collect();
        let q = interp::qr(&x, n, n);
        let l: Vec<f64> = (0..n).map(|i| cond.powf(-(i as f64) / (n - 1) as f64)).collect();
        let build = |f: &dyn Fn(f64) -> f64| -> Vec<f64> {
            let mut out = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    out[i * n + j] = (0..n).map(|e| q[i * n + e] * f(l[e]) * q[j * n + e]).sum();
                }
            }
            out
        };
        let a = build(&|v| v);
        (a.iter().map(|v| *v as f32).collect(), build(&|v| v.powf(-0.25)))
    }

    fn relative(x: &[f32], exact: &[f64]) -> f64 {
        let num: f64 = x.iter().zip(exact).map(|(a, b)| (f64::from(*a) - b).powi(2)).sum();
        let den: f64 = exact.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    }

    fn root(a: &[f32], n: usize, k: f32, p: Precision, method: RootMethod) -> (Vec<f32>, u64) {
        let mut out = vec![0.0; n * n];
        let flops =
            run(&Op::InvRoot(p, method), &[(a, vec![n, n]), (&[k][..], vec![])], &mut out, 2).expect("inv_root");
        (out, flops)
    }

    /// The accuracy docs/language.md states for `method = newton`: relative (Frobenius) error
    /// of the inverse fourth root against the exact one, next to `eigh`'s, for condition
    /// numbers 1e2 to 1e8 (`cargo test -p gdc-runtime newton -- --nocapture` prints them).
    #[test]
    fn newton_inverse_roots_are_as_accurate_as_eigh() {
        let n = 64;
        for cond in [1e2, 1e4, 1e6, 1e8] {
            let (a, exact) = conditioned(n, cond);
            // The float32 matrix's own exact root (its rounding moves the small eigenvalues).
            let wide: Vec<f64> = a.iter().map(|v| f64::from(*v)).collect();
            let exact_of_a = interp::inv_root(&wide, n, 4.0);
            assert!(relative(&exact_of_a.iter().map(|v| *v as f32).collect::<Vec<_>>(), &exact) < 0.1);
            for p in [Precision::F64, Precision::F32] {
                let (newton, flops) = root(&a, n, 4.0, p, RootMethod::Newton);
                let (eigh, _) = root(&a, n, 4.0, p, RootMethod::Eigh);
                let (e_newton, e_eigh) = (relative(&newton, &exact_of_a), relative(&eigh, &exact_of_a));
                println!(
                    "cond {cond:.0e} {p:?}: newton {e_newton:.1e} eigh {e_eigh:.1e} ({} products)",
                    flops / (n * (n + 1) * n) as u64
                );
                let bound = match (p, cond) {
                    (Precision::F64, _) => 1e-6,
                    (Precision::F32, c) if c <= 1e4 => 1e-3,
                    (Precision::F32, c) if c <= 1e6 => 2e-2,
                    // float32 cannot hold these roots: Newton diverges and falls back.
                    _ => f64::INFINITY,
                };
                assert!(e_newton <= bound, "cond {cond:e} {p:?}: newton {e_newton:e} (bound {bound:e})");
                if e_newton > e_eigh {
                    assert!(
                        e_newton <= 20.0 * e_eigh + 1e-5,
                        "cond {cond:e} {p:?}: newton {e_newton:e}, eigh {e_eigh:e}"
                    );
                }
                assert!(flops > 0);
            }
        }
        // The float64 iteration agrees with the interpreter's.
        let (a, _) = conditioned(24, 1e4);
        let wide: Vec<f64> = a.iter().map(|v| f64::from(*v)).collect();
        let oracle = interp::inv_root_newton(&wide, 24, 4.0).expect("converges");
        let (got, _) = root(&a, 24, 4.0, Precision::F64, RootMethod::Newton);
        assert!(relative(&got, &oracle) < 1e-7);
    }

    #[test]
    fn newton_falls_back_to_eigh_where_it_does_not_apply_or_converge() {
        let n = 32;
        // Rank 16 (singular): Newton cannot converge; a zero matrix; a root that is not whole.
        let x = noise(n * 16, 5);
        let mut singular = vec![0.0f32; n * n];
        run(
            &Op::MatMul { ta: false, tb: true, sym: true },
            &[(&x[..], vec![n, 16]), (&x[..], vec![n, 16])],
            &mut singular,
            1,
        )
        .expect("product");
        let (spd, _) = conditioned(n, 1e3);
        for (a, k, what) in [(&singular, 4.0, "singular"), (&vec![0.0; n * n], 4.0, "zero"), (&spd, 2.5, "k = 2.5")] {
            for p in [Precision::F64, Precision::F32] {
                let (newton, flops) = root(a, n, k, p, RootMethod::Newton);
                let (eigh, eigh_flops) = root(a, n, k, p, RootMethod::Eigh);
                let same = newton.iter().zip(&eigh).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(same, "{what} {p:?}: the Newton result is not eigh's");
                assert!(flops >= eigh_flops, "{what} {p:?}: {flops} operations counted");
            }
        }
        // The singular one spent its iterations first.
        let (_, flops) = root(&singular, n, 4.0, Precision::F64, RootMethod::Newton);
        assert!(flops > inv_root_flops(n as u64));
    }
}
