//! The CPU engine: runs a plan's compiled kernels over the bound parameters. The host
//! prelude and device scalars are computed here in float64; each item of the step is ONE
//! parallel pass over a persistent thread pool: the elements of every parameter's tensors
//! are cut into chunks (not one task per tensor), so many small tensors cost about what one
//! large one does. Reductions are summed per chunk in float64 and combined in chunk order,
//! so results do not depend on the thread count or timing.

#![allow(unsafe_code)]

use crate::shared::{
    counted_step, in_fold_order, internal, non_finite_after, operand_sizes, size_of, state_use, writes_param, Combine,
    Counters, HostSide, Outcome, Partial, Run, Scalars, StateStore,
};
use crate::RuntimeError;
use gdc_compiler::chunks::{CallExtent, Chunk, Chunking};
use gdc_compiler::cpu::abi::{Mode, CHUNKS};
use gdc_compiler::cpu::{CompiledKernel, CpuProgram};
use gdc_compiler::inputs::{Given, StepInputs};
use gdc_compiler::interp::{self, elements_of as shape_len, names_of as names, BoundParam};
use gdc_compiler::ir::{Func, ReduceKind, Value};
use gdc_compiler::plan::{Buffer, Item, Kernel, LibCall, Plan};
use gdc_dsl::types::Shape;
use rayon::prelude::*;
use std::sync::Arc;

/// A zeroed float32 buffer whose first element sits `skew` cache lines past where the
/// allocator put it. Large allocations all start at the same offset within a page, so the
/// i-th elements of a step's four or five streams would share cache sets and trip the
/// processor's 4K-aliasing stalls (AdamW on 2^24 elements: 16.0 ms unskewed against 10.3 ms
/// on 16,000,000); each buffer the engine owns gets its own skew.
struct Padded {
    data: Vec<f32>,
    off: usize,
    len: usize,
}

impl Padded {
    fn zeros(len: usize, skew: usize) -> Padded {
        // 16 floats per 64-byte line; an odd multiple of 5 lines keeps skews apart.
        let off = (skew % 13) * 5 * 16 + 16;
        Padded { data: vec![0.0; len + off], off, len }
    }
}

impl std::ops::Deref for Padded {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Padded {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.off..self.off + self.len]
    }
}

/// The float32 words a bf16 state of `len` elements takes: two elements a word, the even
/// one in the low half (the kernels address it as little-endian 16-bit elements).
fn bf16_words(len: usize) -> usize {
    len.div_ceil(2)
}

/// A bf16 state's elements, widened to float32.
fn bf16_decode(words: &[f32], len: usize) -> Vec<f32> {
    (0..len)
        .map(|k| {
            let w = words[k / 2].to_bits();
            gdc_compiler::ir::bf16_value(if k % 2 == 0 { w as u16 } else { (w >> 16) as u16 })
        })
        .collect()
}

/// `data` rounded to bf16 and packed two elements a word.
fn bf16_encode(data: &[f32], words: &mut [f32]) {
    for (w, pair) in words.iter_mut().zip(data.chunks(2)) {
        let lo = u32::from(gdc_compiler::ir::bf16_bits(pair[0]));
        let hi = pair.get(1).map_or(0, |x| u32::from(gdc_compiler::ir::bf16_bits(*x)));
        *w = f32::from_bits(lo | (hi << 16));
    }
}

/// One parameter's buffers owned by the engine.
struct Owned {
    /// By state index; `None` for state this parameter's variant does not use. A bf16
    /// state holds two elements a word (see [`bf16_words`]).
    states: Vec<Option<Padded>>,
    /// Each state's number of elements (0 when not allocated).
    state_lens: Vec<usize>,
    /// The update plan's temporaries.
    temps: Vec<Padded>,
}

pub(crate) struct CpuEngine {
    plan: Arc<Plan>,
    code: Arc<CpuProgram>,
    pool: rayon::ThreadPool,
    pub params: Vec<BoundParam>,
    owned: Vec<Owned>,
    /// Hyperparameters, globals, the step counter.
    pub counters: Counters,
    /// Floating-point operations of the library calls run so far (what `linalg::run` counts).
    pub matrix_flops: std::sync::atomic::AtomicU64,
    /// The partial reductions of the kernel running, kept between kernels and steps: a grid
    /// kernel's bands carry a float64 per column (4 MB for Adafactor on 4096x4096), which a
    /// fresh allocation would page-fault in on every step. Every chunk writes all its slots.
    partials: std::sync::Mutex<Vec<f64>>,
}

/// A raw buffer pointer that may cross to a worker thread: every chunk writes a disjoint
/// element range (flat) or band of rows (grid) of its buffers, and library calls own their
/// tensor.
#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: see the type's documentation; the step holds `&mut` to every buffer meanwhile.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

// SAFETY: as for `Ptr`: chunks of a call write disjoint element ranges or bands of rows.
unsafe impl Sync for Call<'_> {}

impl Ptr {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One kernel call prepared for a parameter.
struct Call<'a> {
    kernel: &'a CompiledKernel,
    /// The kernel's pointer table (raw pointers: see [`Ptr`] for why sharing is sound).
    bufs: Vec<*mut f32>,
    scalars: Vec<f32>,
    sizes: [u64; 3],
    /// Elements in the kernel's domain for this parameter.
    len: usize,
    param: usize,
}

impl CpuEngine {
    pub fn new(
        plan: Arc<Plan>,
        code: Arc<CpuProgram>,
        params: Vec<BoundParam>,
        threads: usize,
    ) -> Result<CpuEngine, RuntimeError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gdc-worker-{i}"))
            .build()
            .map_err(|e| RuntimeError::Codegen(format!("cannot start {threads} worker threads: {e}")))?;
        let m = &plan.module;
        let mut owned = Vec::new();
        for bp in &params {
            let vp = &plan.variants[bp.variant];
            let used = state_use(m, &m.variants[bp.variant].init, &m.variants[bp.variant].update);
            let pshape = vp.pattern.param_shape();
            let state_lens: Vec<usize> = m
                .states
                .iter()
                .enumerate()
                .map(|(s, st)| {
                    let shape = if st.shape == Shape::Like { pshape.clone() } else { st.shape.clone() };
                    if used[s] {
                        shape_len(&shape, bp)
                    } else {
                        0
                    }
                })
                .collect();
            let states = m
                .states
                .iter()
                .enumerate()
                .map(|(s, st)| {
                    used[s].then(|| {
                        let words = if st.bf16 { bf16_words(state_lens[s]) } else { state_lens[s] };
                        Padded::zeros(words, s + 1)
                    })
                })
                .collect();
            let temps = vp
                .update
                .temps
                .iter()
                .enumerate()
                .map(|(t, shape)| Padded::zeros(shape_len(shape, bp), m.states.len() + t + 1))
                .collect();
            owned.push(Owned { states, state_lens, temps });
        }
        let counters = Counters::new(m);
        Ok(CpuEngine {
            plan,
            code,
            pool,
            params,
            owned,
            counters,
            matrix_flops: Default::default(),
            partials: Default::default(),
        })
    }

    /// The storage of state `s` of parameter `i`, once initialised (a bf16 state packed two
    /// elements a word: [`StateStore::state_copy`] widens it).
    pub fn state(&self, i: usize, s: usize) -> Option<&[f32]> {
        if !self.counters.initialised {
            return None;
        }
        self.owned.get(i)?.states.get(s)?.as_deref()
    }

    /// Which inputs each member's next step reads (see [`crate::shared::inputs_next_step`]).
    pub fn inputs_next_step(&mut self) -> Result<Vec<Vec<bool>>, RuntimeError> {
        let plan = Arc::clone(&self.plan);
        crate::shared::inputs_next_step(self, &plan)
    }

    /// One step; with `check`, the gradient check first (see [`counted_step`]); with
    /// `combine`, every reducing kernel's partials go through it before anything reads them.
    pub fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        check: bool,
        mut combine: Option<Combine>,
        inputs: &StepInputs<f32>,
    ) -> Result<Outcome, RuntimeError> {
        let lens: Vec<(usize, usize)> = params.iter().zip(grads).map(|(p, g)| (p.len(), g.len())).collect();
        interp::check_step_args(&self.params, params.len(), grads.len(), &lens)?;
        let n_inputs = self.plan.module.inputs.len();
        if n_inputs > 0 {
            for (i, bp) in self.params.iter_mut().enumerate() {
                bp.inputs = inputs.shapes(i);
                bp.inputs.resize(n_inputs, None);
            }
        }
        let plan = Arc::clone(&self.plan);
        counted_step(self, &plan, check, |e, run, outs| {
            let combine = match run {
                Run::Check => None,
                _ => combine.as_mut().map(|c| &mut **c as Combine),
            };
            e.run_all_with(run, params, grads, outs, combine, inputs)
        })
    }

    /// Runs the init plan, the update plan or the update plan's gradient check of every
    /// parameter, variant by variant, each item as one parallel pass over all the parameters
    /// of that variant; returns the non-finite counts a check found (member, count). With
    /// `combine`, each kernel that reduces hands its partials to it (also when it runs for
    /// no member here, so every rank combines the same kernels in the same order).
    fn run_all_with(
        &mut self,
        what: Run,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        prepare_outs: &[f64],
        mut combine: Option<Combine>,
        inputs: &StepInputs<f32>,
    ) -> Result<Vec<(usize, f64)>, RuntimeError> {
        let plan = Arc::clone(&self.plan);
        let code = Arc::clone(&self.code);
        let m = &plan.module;
        let init = what == Run::Init;
        let mut non_finite = Vec::new();
        let mut stores = Vec::new();
        let mut init_temps: Vec<Vec<Padded>> = Vec::new();
        if init {
            for bp in &self.params {
                let fp = &plan.variants[bp.variant].init;
                init_temps.push(
                    fp.temps.iter().enumerate().map(|(t, shape)| Padded::zeros(shape_len(shape, bp), t)).collect(),
                );
            }
        }
        let (active, mut runs) = self.variant_runs(&plan, what, prepare_outs)?;
        in_fold_order(&plan, &active, init, what.pass(), &mut runs, |vi, items, members, envs| {
            let (func, fplan, compiled) = if init {
                (&m.variants[vi].init, &plan.variants[vi].init, &code.variants[vi].0)
            } else {
                (&m.variants[vi].update, &plan.variants[vi].update, &code.variants[vi].1)
            };
            let func_of = (m, func);
            for (ii, item) in fplan.items_of(what.pass()).filter(|(ii, _)| items.contains(ii)) {
                match item {
                    Item::Kernel(k) => {
                        let Some(ck) = &compiled[ii] else {
                            return Err(internal(format!("kernel k{} was not compiled", k.id)));
                        };
                        let mut calls = Vec::new();
                        let run = self.item_members(func_of, &k.scalars, k.guard, members, envs, prepare_outs)?;
                        // An item whose guard held for no parameter costs nothing: no pool
                        // round trip (an unrolled loop's iterations past a hyperparameter's
                        // bound are hundreds of such items).
                        let columns = combine.is_some() && ck.abi.axis_reductions.iter().any(|(_, by_rows)| !by_rows);
                        let combining = columns || (combine.is_some() && !k.reductions.is_empty());
                        if run.is_empty() && !combining {
                            continue;
                        }
                        for mi in run {
                            let i = members[mi];
                            // Each scalar four times over, one per vector lane (see the ABI).
                            let mut scalars = Vec::with_capacity(4 * ck.abi.scalars.len());
                            for v in &ck.abi.scalars {
                                let x = self.scalar_for(func_of, *v, envs, (mi, i), prepare_outs)?;
                                scalars.extend([x as f32; 4]);
                            }
                            let bp = &self.params[i];
                            let owned = &mut self.owned[i];
                            let temps = if init { &mut init_temps[i] } else { &mut owned.temps };
                            let mut bufs = Vec::with_capacity(ck.abi.buffers.len());
                            for b in &ck.abi.buffers {
                                let ptr = match b {
                                    // Initialisers read the parameter in place and never
                                    // write it (checked below, before any kernel runs): a
                                    // first step copies nothing the size of the model.
                                    Buffer::Param => params[i].as_mut_ptr(),
                                    Buffer::Grad => grads[i].as_ptr() as *mut f32,
                                    Buffer::State(s) => match owned.states[*s].as_mut() {
                                        Some(x) => x.as_mut_ptr(),
                                        None => {
                                            return Err(internal(format!(
                                                "state `{}` is not allocated",
                                                m.states[*s].name
                                            )))
                                        }
                                    },
                                    Buffer::Temp(t) => temps[*t].as_mut_ptr(),
                                    // Read-only: kernels never write an input.
                                    Buffer::Input(j) => given(inputs, i, *j, m)?.data.as_ptr() as *mut f32,
                                };
                                bufs.push(ptr);
                            }
                            if init && ck.abi.buffers.contains(&Buffer::Param) && writes_param(k) {
                                return Err(internal("an initialiser writes the parameter".into()));
                            }
                            let sizes = [bp.numel as u64, bp.rows as u64, bp.cols as u64];
                            let len = shape_len(&k.domain, bp);
                            calls.push(Call { kernel: ck, bufs, scalars, sizes, len, param: mi });
                        }
                        let (mut slots, columns) = if calls.is_empty() {
                            Default::default()
                        } else {
                            self.run_kernel(&calls, k, func, columns)?
                        };
                        if let (true, Some(c)) = (combining, combine.as_mut()) {
                            // Whole-tensor partials, then each column reduction's, a partial
                            // per column.
                            let mut parts: Vec<Partial> = slots
                                .iter()
                                .map(|(mi, r, x)| Partial {
                                    member: members[*mi],
                                    kind: ReduceKind::of(func, *r),
                                    value: *x,
                                })
                                .collect();
                            for (mi, r, xs) in &columns {
                                let kind = ReduceKind::of(func, *r);
                                parts.extend(xs.iter().map(|x| Partial { member: members[*mi], kind, value: *x }));
                            }
                            c(&mut parts)?;
                            for (slot, part) in slots.iter_mut().zip(&parts) {
                                slot.2 = part.value;
                            }
                            let mut at = slots.len();
                            for (mi, r, xs) in &columns {
                                let combined: Vec<f64> = parts[at..at + xs.len()].iter().map(|p| p.value).collect();
                                at += xs.len();
                                let Some(call) = calls.iter().find(|c| c.param == *mi) else {
                                    return Err(internal(format!("column reduction {r} of no call")));
                                };
                                write_axis(k, call, *r, &combined)?;
                            }
                        }
                        for (mi, r, x) in slots {
                            envs.set(mi, r, x);
                        }
                        non_finite.extend(non_finite_after(fplan, ii, members, envs));
                    }
                    Item::Lib(l) => {
                        let jobs = self.item_members(func_of, &l.scalars, l.guard, members, envs, prepare_outs)?;
                        if jobs.is_empty() {
                            continue;
                        }
                        self.run_lib(l, func, members, &jobs, envs, init, &mut init_temps, params, grads, inputs)?;
                    }
                }
            }
            Ok(())
        })?;
        if what == Run::Step {
            for &vi in &active {
                let (members, envs) = &runs[vi];
                let (func, fplan) = (&m.variants[vi].update, &plan.variants[vi].update);
                stores.extend(self.globals_after((m, func), fplan, members, envs, prepare_outs)?);
            }
        }
        // Globals the update assigned: every parameter read the old value; stored once.
        for (gi, x) in stores {
            self.counters.globals[gi] = x;
        }
        Ok(non_finite)
    }

    /// Runs one kernel item over every call, cut into chunks ([`gdc_compiler::chunks`]):
    /// flat kernels into element ranges, grid kernels into bands of rows. Returns the full
    /// reductions (call's member index, value, result) and writes each axis reduction to its
    /// outputs where their guards hold, except, with `columns`, those along the rows
    /// (`sum(x, axis = 0)`), whose float64 sums it returns instead (call's member index,
    /// value, one per column) for the caller to combine across ranks and [`write_axis`].
    #[allow(clippy::type_complexity)]
    fn run_kernel(
        &self,
        calls: &[Call],
        k: &Kernel,
        func: &Func,
        columns: bool,
    ) -> Result<(Vec<(usize, Value, f64)>, Vec<(usize, Value, Vec<f64>)>), RuntimeError> {
        let abi = &calls[0].kernel.abi;
        let dn = names(&k.domain);
        let extents: Vec<CallExtent> = calls
            .iter()
            .map(|c| match abi.mode {
                Mode::Flat => CallExtent { len: c.len, rows: 0, cols: 0 },
                Mode::Grid => CallExtent { len: c.len, rows: size_of(&dn[0], c.sizes), cols: size_of(&dn[1], c.sizes) },
            })
            .collect();
        let chunking = Chunking::new(abi, &extents, CHUNKS);
        let mut partials = self.partials.lock().map_err(|_| internal("the partials buffer is poisoned".into()))?;
        if partials.len() < chunking.partials.max(1) {
            partials.resize(chunking.partials.max(1), 0.0);
        }
        let base = Ptr(partials.as_mut_ptr() as *mut f32);
        let run = |ch: &Chunk| {
            let c = &calls[ch.call];
            // SAFETY: the kernel reads and writes elements (flat) or rows (grid) start..end of
            // buffers whose lengths `bind` checked against the parameter's sizes; each chunk
            // has its own range of `partials`, sized by the chunking.
            unsafe {
                let parts = (base.get() as *mut f64).add(ch.partials);
                (c.kernel.entry)(
                    c.bufs.as_ptr(),
                    c.scalars.as_ptr(),
                    c.sizes.as_ptr(),
                    ch.start as u64,
                    ch.end as u64,
                    parts,
                );
            }
        };
        // Work that fits one chunk runs on the calling thread: waking the pool costs more
        // than stepping a few small tensors (tens of microseconds against a few).
        let elements: usize = chunking
            .chunks
            .iter()
            .map(|ch| (ch.end - ch.start) * if abi.mode == Mode::Grid { extents[ch.call].cols } else { 1 })
            .sum();
        let shares = self.pool.current_num_threads().min(chunking.chunks.len());
        if shares <= 1 || elements <= CHUNKS.flat {
            chunking.chunks.iter().for_each(run);
        } else {
            // The calling thread takes the first contiguous share of the chunks and the pool's
            // workers the others: handing the whole item to the pool and sleeping until it is
            // done cost two thread wake-ups per item (about 40 µs a step here, the step itself
            // 100-400 µs at 2^20 elements), and the caller now works while the workers wake.
            let chunks = &chunking.chunks;
            let bounds = |w: usize| w * chunks.len() / shares;
            let run = &run;
            self.pool.in_place_scope(|s| {
                for w in 1..shares {
                    s.spawn(move |_| chunks[bounds(w)..bounds(w + 1)].iter().for_each(run));
                }
                chunks[..bounds(1)].iter().for_each(run);
            });
        }
        // Combined in chunk order.
        let combined = chunking.combine(func, abi, &extents, &partials);
        let mut full = Vec::with_capacity(calls.len() * abi.reductions.len());
        let mut sums = Vec::new();
        for (ci, c) in calls.iter().enumerate() {
            for (ri, r) in abi.reductions.iter().enumerate() {
                full.push((c.param, *r, combined.full[ci][ri]));
            }
            for (ai, (r, by_rows)) in abi.axis_reductions.iter().enumerate() {
                let values = &combined.axis[ci][ai];
                if columns && !by_rows {
                    sums.push((c.param, *r, values.clone()));
                } else {
                    write_axis(k, c, *r, values)?;
                }
            }
        }
        Ok((full, sums))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_lib(
        &mut self,
        l: &LibCall,
        func: &Func,
        members: &[usize],
        jobs: &[usize],
        envs: &Scalars,
        init: bool,
        init_temps: &mut [Vec<Padded>],
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        inputs: &StepInputs<f32>,
    ) -> Result<(), RuntimeError> {
        let Buffer::Temp(out_t) = l.output else {
            return Err(internal("a library call writes a non-temporary".into()));
        };
        // The result goes straight into the output temporary, which is never an operand
        // (the plan materialises each value in its own buffer).
        if l.inputs.iter().any(|(_, b)| *b == l.output) {
            return Err(internal("a library call reads its own output buffer".into()));
        }
        let mut outs: Vec<(Ptr, usize)> = Vec::with_capacity(jobs.len());
        for &mi in jobs {
            let i = members[mi];
            let dst = if init { &mut init_temps[i][out_t] } else { &mut self.owned[i].temps[out_t] };
            outs.push((Ptr(dst.as_mut_ptr()), dst.len()));
        }
        // Every parameter's call runs on the pool at once (each reads its own buffers and
        // writes its own output).
        let (owned, bound, temps_init) = (&self.owned, &self.params, &*init_temps);
        let (params_ro, inst) = (&*params, func.inst(l.inst));
        let plan_m = &*self.plan;
        // One call alone gets the whole pool (gemm splits the product across it); several
        // calls run side by side, one thread each.
        let threads = if jobs.len() == 1 { self.pool.current_num_threads() } else { 1 };
        let flops = &self.matrix_flops;
        let compute = |(mi, (out, len)): (usize, (Ptr, usize))| -> Result<(), RuntimeError> {
            let i = members[mi];
            let bp = &bound[i];
            // Scalar operands (host values) first, so the operands below can borrow them.
            let mut host_values: Vec<Vec<f32>> = Vec::with_capacity(inst.args.len());
            for a in &inst.args {
                let from_host = func.ty(*a).is_scalar() && !l.inputs.iter().any(|(v, _)| v == a);
                host_values.push(if from_host {
                    vec![envs.get(mi, *a).ok_or_else(|| internal(format!("{a} is not available")))? as f32]
                } else {
                    Vec::new()
                });
            }
            let mut operands: Vec<crate::linalg::Operand> = Vec::with_capacity(inst.args.len());
            for (ai, a) in inst.args.iter().enumerate() {
                let mut sizes = operand_sizes(&func.ty(*a).shape, bp);
                if !host_values[ai].is_empty() {
                    operands.push((&host_values[ai][..], sizes));
                    continue;
                }
                let Some((_, b)) = l.inputs.iter().find(|(v, _)| v == a) else {
                    return Err(internal(format!("library call reads {a}, which it did not list")));
                };
                let data: &[f32] = match b {
                    Buffer::Param => &params_ro[i][..],
                    Buffer::Grad => grads[i],
                    Buffer::State(s) => owned[i].states[*s].as_deref().unwrap_or(&[]),
                    Buffer::Temp(t) if init => &temps_init[i][*t],
                    Buffer::Temp(t) => &owned[i].temps[*t],
                    Buffer::Input(j) => {
                        let g = given(inputs, i, *j, &plan_m.module)?;
                        // An input's own dimensions (`batch`) are sized as given.
                        if matches!(plan_m.module.inputs[*j].shape, Shape::Dims(_)) {
                            sizes = g.shape.to_vec();
                        }
                        g.data
                    }
                };
                operands.push((data, sizes));
            }
            // SAFETY: `out` is parameter i's output temporary, `len` long; no operand is that
            // buffer (checked above), and each job has its own parameter, so nothing else
            // reads or writes it meanwhile.
            let out = unsafe { std::slice::from_raw_parts_mut(out.get(), len) };
            let done = crate::linalg::run(&inst.op, &operands, out, threads)?;
            flops.fetch_add(done, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        };
        let work: Vec<(usize, (Ptr, usize))> = jobs.iter().copied().zip(outs).collect();
        let results: Vec<Result<(), RuntimeError>> = if work.len() == 1 {
            vec![self.pool.install(|| compute(work[0]))]
        } else {
            self.pool.install(|| work.par_iter().map(|w| compute(*w)).collect())
        };
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(())
    }
}

/// Input `j` of member `i` this step; an item that reads one runs only where it was given
/// (required inputs are checked before the step, optional ones read under `present`).
fn given<'a>(
    inputs: &StepInputs<'a, f32>,
    i: usize,
    j: usize,
    m: &gdc_compiler::ir::Module,
) -> Result<Given<'a, f32>, RuntimeError> {
    inputs
        .members
        .get(i)
        .and_then(|x| x.get(j).copied().flatten())
        .ok_or_else(|| internal(format!("input `{}` is read, but was not given", m.inputs[j].name)))
}

impl HostSide for CpuEngine {
    fn state_element(&self, i: usize, s: usize) -> Result<Option<f32>, RuntimeError> {
        Ok(self.owned[i].states[s].as_ref().and_then(|x| x.first()).copied())
    }
}

impl StateStore for CpuEngine {
    fn bound(&self) -> &[BoundParam] {
        &self.params
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    fn state_len(&self, i: usize, s: usize) -> Option<usize> {
        let o = self.owned.get(i)?;
        o.states.get(s)?.as_ref().map(|_| o.state_lens[s])
    }

    fn state_copy(&self, i: usize, s: usize) -> Result<Option<Vec<f32>>, RuntimeError> {
        let bf16 = self.plan.module.states[s].bf16;
        Ok(self.state(i, s).map(|x| if bf16 { bf16_decode(x, self.owned[i].state_lens[s]) } else { x.to_vec() }))
    }

    fn set_state(&mut self, i: usize, s: usize, data: &[f32]) -> Result<bool, RuntimeError> {
        let bf16 = self.plan.module.states.get(s).is_some_and(|st| st.bf16);
        let Some(o) = self.owned.get_mut(i) else { return Ok(false) };
        let len = o.state_lens.get(s).copied().unwrap_or(0);
        Ok(match o.states.get_mut(s).and_then(|x| x.as_mut()) {
            Some(buf) if len == data.len() => {
                if bf16 {
                    bf16_encode(data, buf);
                } else {
                    buf.copy_from_slice(data);
                }
                true
            }
            _ => false,
        })
    }
}

/// Writes an axis reduction's combined values (`r`, one per row or column) to every output
/// of `k` that holds it and whose guard holds for call `c`, rounded to float32 (or bf16).
fn write_axis(k: &Kernel, c: &Call, r: Value, values: &[f64]) -> Result<(), RuntimeError> {
    let abi = &c.kernel.abi;
    for o in k.outputs.iter().filter(|o| o.value == r) {
        if let Some(g) = o.guard {
            let Some(gi) = abi.scalars.iter().position(|s| *s == g) else {
                return Err(internal(format!("the guard {g} of axis reduction {r} is not a kernel scalar")));
            };
            if c.scalars[4 * gi] == 0.0 {
                continue;
            }
        }
        let Some(slot) = abi.buffers.iter().position(|b| *b == o.buffer) else {
            return Err(internal(format!("axis reduction {r} writes {:?}, not a kernel buffer", o.buffer)));
        };
        let ptr = c.bufs[slot];
        // SAFETY: an axis reduction's output buffer holds one element per row or column of
        // the parameter (its shape, which `bind` sized), as many as `values`; the kernel's
        // chunks have all returned, so nothing else touches it.
        unsafe {
            if abi.bf16[slot] {
                let p = ptr as *mut u16;
                for (j, x) in values.iter().enumerate() {
                    *p.add(j) = gdc_compiler::ir::bf16_bits(*x as f32);
                }
            } else {
                for (j, x) in values.iter().enumerate() {
                    *ptr.add(j) = *x as f32;
                }
            }
        }
    }
    Ok(())
}
