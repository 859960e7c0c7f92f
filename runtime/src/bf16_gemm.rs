//! The CPU's bfloat16 matrix product: `precision = bf16` products on a CPU with
//! `avx512_bf16` (detected at run time), whose `vdpbf16ps` multiplies pairs of bfloat16
//! values and adds them to float32 sums at twice the rate of float32 multiply-adds. Neither
//! faer nor the gemm crate has one, so this is a small blocked product of its own: both
//! operands rounded to bfloat16 once (to nearest even, as `ir::round_significand`) and laid
//! out as pairs along the inner dimension, then an 8 x 32 register-tile microkernel over
//! blocks of 1024 inner indices, threads taking bands of rows. A symmetric product computes
//! the tiles that touch its lower triangle only. Sums are float32 with denormals flushed
//! (what `vdpbf16ps` does); results agree with the rounded operands' float32 product within
//! float32 summation error.

// SIMD intrinsics and raw tiles: each `unsafe` says what it relies on.
#![allow(unsafe_code)]

use faer::MatRef;
use std::arch::x86_64::*;

/// Rows of a register tile.
const MR: usize = 8;
/// Columns of a register tile: two 16-lane vectors.
const NR: usize = 32;
/// Inner-dimension pairs per block (1024 inner indices): one 32-column panel of `b` is
/// 64 KiB, streamed from L2 while eight rows of `a` (16 KiB) stay in L1. Measured on a
/// 1024^3 product (Zen 4, one thread): 256 pairs and 128 pairs (with the loops swapped to
/// keep a panel in L1) were 5% and 25% slower.
const KC: usize = 512;

/// Whether this CPU runs [`matmul`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// `out` (m x n, row-major) = `a` (m x k) `b` (k x n), each operand rounded to bfloat16,
/// sums in float32. With `lower` (a symmetric product, m == n), only the tiles that hold an
/// element on or below the diagonal are computed, and the lower triangle is then copied onto
/// the upper one. Runs on `threads` threads of the current rayon pool. Call only when
/// [`available`].
pub fn matmul(a: MatRef<'_, f32>, b: MatRef<'_, f32>, out: &mut [f32], lower: bool, threads: usize) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(available() && b.nrows() == k && out.len() == m * n, "bf16 product of the wrong shapes");
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    let parallel = threads > 1;
    // `a` as m rows of kp pairs of bfloat16 along the inner dimension (an odd k pads a
    // zero); `b` as panels of 32 columns, panel j holding for each pair p columns
    // 32j..32j+31.
    let ap = a_pairs(a, parallel);
    let bp = b_panels(b, parallel);
    // Bands of rows per thread, of equal work (for `lower`, equal areas of the triangle).
    let bands = threads.clamp(1, m.div_ceil(MR));
    let mut cuts: Vec<usize> = (0..=bands)
        .map(|t| {
            let f = t as f64 / bands as f64;
            let f = if lower { f.sqrt() } else { f };
            ((f * m as f64).round() as usize).div_ceil(MR) * MR
        })
        .collect();
    cuts[bands] = m;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let band_rows = |t: usize| (cuts[t].min(m), cuts[t + 1].min(m));
    on_bands(bands, |t| {
        let (r0, r1) = band_rows(t);
        // SAFETY: bands of rows are disjoint, so each writes its own rows of `out`; the
        // kernel reads `ap` and `bp` within the sizes built above.
        unsafe { band(&ap, kp, &bp, out_ptr.get(), n, r0, r1, lower) };
    });
    if lower {
        // Once every band is done: each copies its rows' lower triangle onto the upper one
        // (columns r0..r1 above the diagonal), which no other band writes or reads.
        on_bands(bands, |t| {
            let (r0, r1) = band_rows(t);
            // SAFETY: as above; m == n for a symmetric product.
            unsafe { mirror_band(out_ptr.get(), n, r0, r1) };
        });
    }
}

/// Runs `f(t)` for t in 0..bands, on the current rayon pool when there are several.
fn on_bands(bands: usize, f: impl Fn(usize) + Sync) {
    if bands == 1 {
        f(0);
        return;
    }
    let f = &f;
    rayon::scope(|s| {
        for t in 0..bands {
            s.spawn(move |_| f(t));
        }
    });
}

/// out[c, r] = out[r, c] for rows r0 <= r < r1 and c < r, through 16 x 16 blocks
/// transposed in a local buffer, so that reads and writes both run along rows (a column
/// walk strides by the row length: 4 KiB for 1024 columns, one L1 set for every element).
unsafe fn mirror_band(out: *mut f32, n: usize, r0: usize, r1: usize) {
    const T: usize = 16;
    let mut block = [[0f32; T]; T];
    for rb in (r0..r1).step_by(T) {
        let rend = (rb + T).min(r1);
        for cb in (0..rend).step_by(T) {
            let cend = (cb + T).min(n);
            for r in rb..rend {
                for c in cb..cend.min(r) {
                    // SAFETY: r, c < n; (r, c) is below the diagonal in this band's rows,
                    // which nothing writes now.
                    block[c - cb][r - rb] = unsafe { *out.add(r * n + c) };
                }
            }
            for c in cb..cend {
                for r in rb.max(c + 1)..rend {
                    // SAFETY: (c, r) is above the diagonal in columns r0..r1: this band's.
                    unsafe { *out.add(c * n + r) = block[c - cb][r - rb] };
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the threads of one product write disjoint rows through it (see `matmul`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f` on each chunk of `out` of `len` elements (with its index), on the current rayon
/// pool when `parallel`.
fn chunks<F: Fn(usize, &mut [u32]) + Sync + Send>(out: &mut [u32], len: usize, parallel: bool, f: F) {
    use rayon::prelude::*;
    if parallel {
        out.par_chunks_mut(len.max(1)).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(len.max(1)).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `a` (m x k) as its rows of pairs of bfloat16, `[m][k.div_ceil(2)]`: row i's pair p holds
/// a[i, 2p] (low half) and a[i, 2p + 1] (high half).
fn a_pairs(a: MatRef<'_, f32>, parallel: bool) -> Vec<u32> {
    let (m, k) = (a.nrows(), a.ncols());
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; m * kp];
    if a.col_stride() != 1 && a.row_stride() == 1 && m > 1 {
        // Columns contiguous (a = y^T): pair up y's rows, `[kp][m]`, then transpose.
        let y = a.transpose();
        let mut t = vec![0u32; kp * m];
        chunks(&mut t, m, parallel, |p, row| interleave(y, 2 * p, row));
        for i0 in (0..m).step_by(32) {
            for p0 in (0..kp).step_by(32) {
                for p in p0..(p0 + 32).min(kp) {
                    for i in i0..(i0 + 32).min(m) {
                        out[i * kp + p] = t[p * m + i];
                    }
                }
            }
        }
        return out;
    }
    chunks(&mut out, kp, parallel, |i, row| along_row(a, i, row));
    out
}

/// `b` (k x n) as panels of 32 columns, `[n.div_ceil(32)][k.div_ceil(2)][32]`: panel j's
/// pair p holds, in lane l, b[2p, 32j + l] (low half) and b[2p + 1, 32j + l] (high half);
/// columns past n are zero.
fn b_panels(b: MatRef<'_, f32>, parallel: bool) -> Vec<u32> {
    let (k, n) = (b.nrows(), b.ncols());
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; n.div_ceil(NR) * kp * NR];
    if b.col_stride() != 1 && b.row_stride() == 1 {
        // Columns contiguous (b = y^T, y n x k): 32 of y's rows as pairs, then transposed.
        let y = b.transpose();
        chunks(&mut out, kp * NR, parallel, |j, panel| {
            let mut rows = vec![0u32; NR * kp];
            for (l, row) in rows.chunks_mut(kp.max(1)).enumerate().take(n.saturating_sub(NR * j).min(NR)) {
                along_row(y, NR * j + l, row);
            }
            for (p, lanes) in panel.chunks_mut(NR).enumerate() {
                for (l, v) in lanes.iter_mut().enumerate() {
                    *v = rows[l * kp + p];
                }
            }
        });
        return out;
    }
    chunks(&mut out, kp * NR, parallel, |j, panel| {
        let cols = b.subcols(NR * j, n.saturating_sub(NR * j).min(NR));
        if cols.ncols() == NR && b.col_stride() == 1 {
            // SAFETY: `available` holds (checked by `matmul`); the view's rows are contiguous.
            unsafe { full_panel(cols, panel) };
            return;
        }
        for (p, lanes) in panel.chunks_mut(NR).enumerate() {
            interleave(cols, 2 * p, lanes);
        }
    });
    out
}

/// A panel of 32 contiguous columns of `x` (k x 32, rows contiguous) as pairs: `out[p][l]`
/// = (x[2p, l], x[2p + 1, l]), a zero past the last row.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn full_panel(x: MatRef<'_, f32>, out: &mut [u32]) {
    let k = x.nrows();
    let row = |i: usize| x.as_ptr().wrapping_offset(i as isize * x.row_stride());
    let zero = _mm512_setzero_ps();
    for (p, lanes) in out.chunks_exact_mut(NR).enumerate() {
        for half in 0..2 {
            // SAFETY: rows 2p and 2p + 1 (when below k) hold 32 contiguous values.
            unsafe {
                let lo = _mm512_loadu_ps(row(2 * p).add(16 * half));
                let hi = if 2 * p + 1 < k { _mm512_loadu_ps(row(2 * p + 1).add(16 * half)) } else { zero };
                let l: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(lo));
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(hi));
                let v = _mm512_or_si512(_mm512_cvtepu16_epi32(l), _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                _mm512_storeu_si512(lanes.as_mut_ptr().add(16 * half).cast(), v);
            }
        }
    }
}

/// Row i of `x` as pairs along its columns into `out` (`x.ncols().div_ceil(2)` pairs).
fn along_row(x: MatRef<'_, f32>, i: usize, out: &mut [u32]) {
    let c = x.ncols();
    if x.col_stride() == 1 {
        // SAFETY: row i's c elements are contiguous from its first; `available` holds
        // (checked by `matmul`).
        unsafe { pack_contiguous(std::slice::from_raw_parts(x.as_ptr().offset(i as isize * x.row_stride()), c), out) };
    } else {
        for (p, v) in out.iter_mut().enumerate() {
            let hi = if 2 * p + 1 < c { bf16_bits(at(x, i, 2 * p + 1)) } else { 0 };
            *v = bf16_bits(at(x, i, 2 * p)) | (hi << 16);
        }
    }
}

/// Rows r and r + 1 of `x` (zeros past its end) interleaved into `out`, one pair per column
/// (`out.len()` columns, at most `x.ncols()`; the rest stays zero).
fn interleave(x: MatRef<'_, f32>, r: usize, out: &mut [u32]) {
    let c = x.ncols().min(out.len());
    let row = |i: usize| -> Option<&[f32]> {
        (i < x.nrows() && x.col_stride() == 1).then(|| {
            // SAFETY: row i's c elements are contiguous from its first.
            unsafe { std::slice::from_raw_parts(x.as_ptr().offset(i as isize * x.row_stride()), c) }
        })
    };
    if x.col_stride() == 1 && r < x.nrows() {
        // SAFETY: `available` holds (checked by `matmul`).
        unsafe { interleave_contiguous(row(r).unwrap_or(&[]), row(r + 1), &mut out[..c]) };
        return;
    }
    for (j, v) in out.iter_mut().enumerate().take(c) {
        let lo = if r < x.nrows() { bf16_bits(at(x, r, j)) } else { 0 };
        let hi = if r + 1 < x.nrows() { bf16_bits(at(x, r + 1, j)) } else { 0 };
        *v = lo | (hi << 16);
    }
}

/// `out[j]` = (lo[j], hi[j]) as a pair of bfloat16 (hi zero when absent), 16 per step.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn interleave_contiguous(lo: &[f32], hi: Option<&[f32]>, out: &mut [u32]) {
    let full = out.len() / 16;
    for q in 0..full {
        // SAFETY: 16 values from 16q are in `lo`, `hi` and `out` (all out.len() long).
        unsafe {
            let l: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(lo.as_ptr().add(16 * q))));
            let mut v = _mm512_cvtepu16_epi32(l);
            if let Some(hi) = hi {
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(hi.as_ptr().add(16 * q))));
                v = _mm512_or_si512(v, _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
            }
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * q).cast(), v);
        }
    }
    for (j, v) in out.iter_mut().enumerate().skip(16 * full) {
        *v = bf16_bits(lo[j]) | (hi.map_or(0, |h| bf16_bits(h[j])) << 16);
    }
}

/// x[i, j] of a strided view.
fn at(x: MatRef<'_, f32>, i: usize, j: usize) -> f32 {
    assert!(i < x.nrows() && j < x.ncols());
    // SAFETY: (i, j) is within the view (checked above).
    unsafe { *x.as_ptr().offset(i as isize * x.row_stride() + j as isize * x.col_stride()) }
}

/// A contiguous row of float32 values as bfloat16 pairs, 32 values per conversion.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_contiguous(x: &[f32], out: &mut [u32]) {
    let full = x.len() / 32;
    for q in 0..full {
        // SAFETY: 32 values from 32q are in `x`, and pairs 16q..16q+15 in `out`.
        unsafe {
            let lo = _mm512_loadu_ps(x.as_ptr().add(32 * q));
            let hi = _mm512_loadu_ps(x.as_ptr().add(32 * q + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(16 * q).cast(), v);
        }
    }
    for (p, v) in out.iter_mut().enumerate().skip(16 * full) {
        let lo = bf16_bits(x[2 * p]);
        let hi = x.get(2 * p + 1).map_or(0, |y| bf16_bits(*y));
        *v = lo | (hi << 16);
    }
}

/// `x` rounded to bfloat16 (to nearest, ties to even; NaN stays NaN), as its 16 bits.
fn bf16_bits(x: f32) -> u32 {
    if x.is_nan() {
        return (x.to_bits() >> 16) | 0x40;
    }
    gdc_compiler::ir::round_significand(x, gdc_compiler::ir::BF16_BITS).to_bits() >> 16
}

/// Rows r0..r1 of the product into `out` (row stride `n`).
#[allow(clippy::too_many_arguments)]
unsafe fn band(ap: &[u32], kp: usize, bp: &[u32], out: *mut f32, n: usize, r0: usize, r1: usize, lower: bool) {
    let panels = n.div_ceil(NR);
    for k0 in (0..kp).step_by(KC) {
        let kc = KC.min(kp - k0);
        let first = k0 == 0;
        for i in (r0..r1).step_by(MR) {
            let rows = MR.min(r1 - i);
            for j in 0..panels {
                let c0 = j * NR;
                if lower && c0 > i + rows - 1 {
                    break;
                }
                let cols = NR.min(n - c0);
                // SAFETY: rows i..i+rows hold kp pairs each from k0; panel j holds kp x 32
                // pairs; out's tile is within its m x n elements.
                unsafe {
                    tile(
                        ap.as_ptr().add(i * kp + k0),
                        kp,
                        rows,
                        bp.as_ptr().add((j * kp + k0) * NR),
                        kc,
                        out.add(i * n + c0),
                        n,
                        cols,
                        first,
                    );
                }
            }
        }
    }
}

/// One register tile: `out[r][c] (+)= sum_p a[r][p] . b[p][c]` for r < rows, c < cols, over
/// `kc` pairs; `first` writes, otherwise adds to what the tile holds.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    a: *const u32,
    lda: usize,
    rows: usize,
    b: *const u32,
    kc: usize,
    out: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // Rows past the matrix read row 0 again; their sums are dropped.
    let row: [*const u32; MR] = std::array::from_fn(|r| if r < rows { a.wrapping_add(r * lda) } else { a });
    for p in 0..kc {
        // SAFETY: the caller passes kc pairs for every row and kc x 32 pairs of the panel.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            for r in 0..MR {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*row[r].add(p) as i32));
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate().take(rows) {
        let mut vals = [0f32; NR];
        // SAFETY: `vals` holds 32 values.
        unsafe {
            _mm512_storeu_ps(vals.as_mut_ptr(), sums[0]);
            _mm512_storeu_ps(vals.as_mut_ptr().add(16), sums[1]);
        }
        // SAFETY: row r of the tile has `cols` elements within `out`.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.add(r * ldc), cols) };
        if first {
            dst.copy_from_slice(&vals[..cols]);
        } else {
            for (d, v) in dst.iter_mut().zip(vals) {
                *d += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;
    use gdc_compiler::ir::{round_significand, BF16_BITS};

    /// The product of the bfloat16-rounded operands in float64, and each element's sum of
    /// |a||b| (what float32 summation error scales with).
    fn reference(a: MatRef<'_, f32>, b: MatRef<'_, f32>) -> (Vec<f64>, Vec<f64>) {
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        let r = |x: f32| f64::from(round_significand(x, BF16_BITS));
        let (mut c, mut s) = (vec![0.0; m * n], vec![0.0; m * n]);
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let t = r(a[(i, l)]) * r(b[(l, j)]);
                    c[i * n + j] += t;
                    s[i * n + j] += t.abs();
                }
            }
        }
        (c, s)
    }

    fn noise(r: usize, c: usize, seed: u64) -> Mat<f32> {
        let v = gdc_runtime_noise(seed, r * c);
        Mat::from_fn(r, c, |i, j| v[i * c + j])
    }

    fn gdc_runtime_noise(seed: u64, n: usize) -> Vec<f32> {
        crate::verify::noise_f32(seed, n)
    }

    #[test]
    fn bf16_products_are_the_rounded_operands_products_in_float32() {
        if !available() {
            eprintln!("skipped: this CPU has no avx512_bf16 (the bf16 product falls back to rounded float32 operands)");
            return;
        }
        // Odd sizes, edges of tiles and panels, more than one inner block (k > 512).
        for (m, k, n) in [(37, 51, 45), (8, 2, 32), (1, 7, 1), (9, 1, 33), (70, 1100, 65), (64, 64, 64)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let sa = if ta { noise(k, m, 1) } else { noise(m, k, 1) };
                let sb = if tb { noise(n, k, 2) } else { noise(k, n, 2) };
                let a = if ta { sa.as_ref().transpose() } else { sa.as_ref() };
                let b = if tb { sb.as_ref().transpose() } else { sb.as_ref() };
                let (want, scale) = reference(a, b);
                let mut one = vec![f32::NAN; m * n];
                matmul(a, b, &mut one, false, 1);
                let mut three = vec![f32::NAN; m * n];
                matmul(a, b, &mut three, false, 3);
                for (idx, (x, (w, s))) in one.iter().zip(want.iter().zip(&scale)).enumerate() {
                    let err = (f64::from(*x) - w).abs();
                    assert!(
                        err <= 1e-6 * s.max(1e-30) * (k as f64).sqrt() + 1e-30,
                        "{m}x{k}x{n} ta={ta} tb={tb} [{idx}]: {x} vs {w} (sum |ab| {s})"
                    );
                }
                assert_eq!(
                    one.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    three.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "thread count changed the result"
                );
            }
        }
    }

    #[test]
    fn a_symmetric_bf16_product_is_the_full_product() {
        if !available() {
            eprintln!("skipped: this CPU has no avx512_bf16");
            return;
        }
        for (n, k) in [(45, 30), (100, 257), (8, 8), (300, 40)] {
            let x = noise(n, k, 3);
            let (a, b) = (x.as_ref(), x.as_ref().transpose());
            let mut full = vec![0.0f32; n * n];
            matmul(a, b, &mut full, false, 2);
            for threads in [1, 2, 3] {
                let mut sym = vec![f32::NAN; n * n];
                matmul(a, b, &mut sym, true, threads);
                // x x^T multiplies the same pairs in the same order for (i, j) and (j, i).
                for (idx, (s, f)) in sym.iter().zip(&full).enumerate() {
                    assert_eq!(s.to_bits(), f.to_bits(), "{n}x{k} {threads} threads [{}, {}]", idx / n, idx % n);
                }
            }
        }
    }
}
