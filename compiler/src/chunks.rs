//! How one launch of a kernel over many parameters (calls) is cut into chunks, and how the
//! chunks' partial reductions combine, for both backends: a *flat* chunk is an element range
//! of a call's domain, a *grid* chunk a band of rows of its matrix domain, all columns.
//!
//! Each chunk writes (never accumulates into) its own slots of one float64 `partials` array
//! from its offset: the full reductions in [`KernelAbi::reductions`] order; then, for a grid
//! chunk, per axis reduction in [`KernelAbi::axis_reductions`] order, `end - start` complete
//! values for a reduction along the columns (one per row of the band) or `cols` values for
//! one along the rows (this band's rows only). The host combines the chunks in chunk order,
//! so results depend neither on the number of threads or blocks nor on timing, and writes
//! axis reductions to their buffers.

use crate::cpu::abi::{KernelAbi, Mode};
use crate::ir::ReduceKind;

/// How large chunks are: a backend's constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSizes {
    /// Elements per flat chunk (a multiple of 4).
    pub flat: usize,
    /// About how many elements a grid chunk covers.
    pub grid: usize,
}

impl ChunkSizes {
    /// Rows per grid chunk for a matrix with `cols` columns: `max(1, grid / cols)`.
    pub fn grid_rows(self, cols: usize) -> usize {
        (self.grid / cols.max(1)).max(1)
    }
}

/// The extent of one call of a launch: its domain's element count (flat kernels) or the
/// domain's rows and columns (grid kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallExtent {
    pub len: usize,
    pub rows: usize,
    pub cols: usize,
}

/// One entry of the `chunks` table: elements (flat) or rows (grid) `start..end` of call
/// `call`, whose partial reductions start at `partials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub call: usize,
    pub start: usize,
    pub end: usize,
    pub partials: usize,
}

/// How a launch is cut into chunks, and how their partial reductions combine: the one place
/// both runtimes and the tests take it from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunking {
    pub chunks: Vec<Chunk>,
    /// Float64 slots of the `partials` buffer.
    pub partials: usize,
}

/// A launch's reductions combined on the host: per call, the full reductions (in
/// [`KernelAbi::reductions`] order) and the axis reductions' vectors (in
/// [`KernelAbi::axis_reductions`] order).
#[derive(Clone, Debug, PartialEq)]
pub struct Combined {
    pub full: Vec<Vec<f64>>,
    pub axis: Vec<Vec<Vec<f64>>>,
}

impl Chunking {
    /// Cuts every call into chunks: `sizes.flat` elements, or bands of
    /// [`ChunkSizes::grid_rows`] rows; calls with nothing to do get none.
    pub fn new(abi: &KernelAbi, calls: &[CallExtent], sizes: ChunkSizes) -> Chunking {
        let nred = abi.reductions.len();
        let mut chunks = Vec::new();
        let mut partials = 0;
        for (call, c) in calls.iter().enumerate() {
            let (total, step) = match abi.mode {
                Mode::Flat => (c.len, sizes.flat),
                Mode::Grid => (if c.len == 0 { 0 } else { c.rows }, sizes.grid_rows(c.cols)),
            };
            let mut start = 0;
            while start < total {
                let end = (start + step).min(total);
                chunks.push(Chunk { call, start, end, partials });
                partials += nred;
                for (_, by_rows) in &abi.axis_reductions {
                    partials += if *by_rows { end - start } else { c.cols };
                }
                start = end;
            }
        }
        Chunking { chunks, partials }
    }

    /// The `chunks` table as kernels read it: `[call, start, end, partials]` per chunk.
    pub fn table(&self) -> Vec<i64> {
        self.chunks.iter().flat_map(|c| [c.call, c.start, c.end, c.partials].map(|x| x as i64)).collect()
    }

    /// Combines the chunks' `partials` in chunk order: full reductions from their identity; an axis
    /// reduction along the columns (one value per row) is copied from each row band, one
    /// along the rows folded over the bands.
    pub fn combine(&self, func: &crate::ir::Func, abi: &KernelAbi, calls: &[CallExtent], partials: &[f64]) -> Combined {
        let nred = abi.reductions.len();
        let identity = |r: &crate::ir::Value| ReduceKind::of(func, *r).identity();
        let mut full = vec![abi.reductions.iter().map(identity).collect::<Vec<f64>>(); calls.len()];
        let mut axis: Vec<Vec<Vec<f64>>> = calls
            .iter()
            .map(|c| {
                abi.axis_reductions
                    .iter()
                    .map(|(r, by_rows)| vec![identity(r); if *by_rows { c.rows } else { c.cols }])
                    .collect()
            })
            .collect();
        for ch in &self.chunks {
            for (ri, r) in abi.reductions.iter().enumerate() {
                full[ch.call][ri] = ReduceKind::of(func, *r).fold(full[ch.call][ri], partials[ch.partials + ri]);
            }
            let mut at = ch.partials + nred;
            for (ai, (v, by_rows)) in abi.axis_reductions.iter().enumerate() {
                let out = &mut axis[ch.call][ai];
                if *by_rows {
                    let n = ch.end - ch.start;
                    out[ch.start..ch.end].copy_from_slice(&partials[at..at + n]);
                    at += n;
                } else {
                    let kind = ReduceKind::of(func, *v);
                    for (j, x) in out.iter_mut().enumerate() {
                        *x = kind.fold(*x, partials[at + j]);
                    }
                    at += out.len();
                }
            }
        }
        Combined { full, axis }
    }
}
