//! The CUDA engine: runs a plan's PTX kernels over the bound parameters, one launch per
//! kernel item covering every parameter of the variant (see `gdc_compiler::gpu::abi`). The
//! host computes scalars in float64 exactly as the CPU engine does, combines the kernels'
//! partial reductions in chunk order and writes axis-reduction results; matrix products,
//! transposes and outer products run on cuBLAS, decompositions on the host.

#![allow(unsafe_code)]

use super::driver::{cuda, parse_arch, slice_ptr, DevBuf, DevPtr, Device, Scratch};
use crate::shared::{
    counted_step, in_fold_order, internal, non_finite_after, operand_sizes, size_of, state_use, writes_param, Counters,
    HostSide, Outcome, Run, Scalars, StateStore,
};
use crate::RuntimeError;
use cudarc::cublas::sys::{cublasOperation_t, cublasSgeam};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use gdc_compiler::artifact::ArtifactError;
use gdc_compiler::gpu::abi::{self, GpuProgram, KernelAbi, Mode};
use gdc_compiler::interp::{self, elements_of as shape_len, names_of as names, BoundParam};
use gdc_compiler::ir::{Func, Op, BF16_BITS, F32_BITS, TF32_BITS};
use gdc_compiler::plan::{Buffer, Item, Kernel, LibCall, Plan};
use gdc_dsl::types::Shape;
use std::collections::HashMap;
use std::sync::Arc;

/// One parameter's device buffers owned by the engine.
struct Owned {
    /// By state index; `None` for state this parameter's variant does not use.
    states: Vec<Option<DevBuf<f32>>>,
    /// The update plan's temporaries.
    temps: Vec<DevBuf<f32>>,
}

/// A kernel ready to launch.
struct Launchable {
    func: CudaFunction,
    abi: KernelAbi,
}

/// The tables of one kernel item's launches, reused from step to step (the stream orders
/// each upload after the previous launch that read the buffer; unchanged tables are not
/// uploaded again).
struct Tables {
    ptrs: Scratch<u64>,
    scalars: Scratch<f32>,
    sizes: Scratch<i64>,
    chunks: Scratch<i64>,
    partials: Scratch<f64>,
}

impl Tables {
    fn new() -> Tables {
        Tables {
            ptrs: Scratch::new(),
            scalars: Scratch::new(),
            sizes: Scratch::new(),
            chunks: Scratch::new(),
            partials: Scratch::new(),
        }
    }
}

/// One kernel call prepared for a parameter.
struct Call {
    /// The member index (the parameter's position among its variant's parameters).
    mi: usize,
    /// The parameter's index.
    param: usize,
    sizes: [u64; 3],
    /// Whether every buffer address of the call is 16-byte aligned.
    aligned: bool,
    len: usize,
}

pub(crate) struct CudaEngine {
    plan: Arc<Plan>,
    dev: Device,
    kernels: HashMap<(usize, bool, usize), Launchable>,
    pub params: Vec<BoundParam>,
    owned: Vec<Owned>,
    /// Device copies of the parameters and gradients for [`CudaEngine::step`] on host
    /// memory, allocated at its first call.
    io: Vec<(DevBuf<f32>, DevBuf<f32>)>,
    /// Per kernel item (variant, init, item).
    tables: HashMap<(usize, bool, usize), Tables>,
    /// Hyperparameters, globals, the step counter.
    pub counters: Counters,
}

/// Whether a library call runs on cuBLAS (the others run on the host).
fn on_cublas(op: &Op) -> bool {
    matches!(op, Op::MatMul { .. } | Op::Transpose | Op::Outer)
}

fn int(x: usize, what: &str) -> Result<i32, RuntimeError> {
    i32::try_from(x).map_err(|_| internal(format!("{what} = {x} is too large for cuBLAS")))
}

impl CudaEngine {
    /// Opens device `ordinal`, checks the program's GPU code against the plan and the device,
    /// loads the PTX and allocates the state on the device.
    pub fn new(
        plan: Arc<Plan>,
        gpu: &GpuProgram,
        params: Vec<BoundParam>,
        ordinal: usize,
    ) -> Result<CudaEngine, RuntimeError> {
        // The artifact's kernel table must be exactly what this plan launches.
        let want = abi::plan_kernels(&plan).map_err(RuntimeError::Codegen)?;
        if gpu.kernels.len() != want.len() || gpu.kernels.iter().zip(&want).any(|(a, (b, _))| a != b) {
            return Err(ArtifactError::Stale { field: "gpu.kernels" }.into());
        }
        let Some(arch) = parse_arch(&gpu.arch) else {
            return Err(ArtifactError::Corrupt { detail: format!("unknown GPU architecture `{}`", gpu.arch) }.into());
        };
        if gpu.ptx.contains('\0') {
            return Err(ArtifactError::Corrupt { detail: "the PTX holds a NUL byte".into() }.into());
        }
        let m = &plan.module;
        let blas = plan.variants.iter().zip(&m.variants).any(|(vp, vm)| {
            [(&vp.init, &vm.init), (&vp.update, &vm.update)]
                .into_iter()
                .any(|(fp, f)| fp.items.iter().any(|it| matches!(it, Item::Lib(l) if on_cublas(&f.inst(l.inst).op))))
        });
        let dev = Device::open(ordinal, blas)?;
        if dev.cc < arch {
            return Err(RuntimeError::GpuArch {
                arch: gpu.arch.clone(),
                device: format!("{} (sm_{}{})", dev.name, dev.cc.0, dev.cc.1),
            });
        }
        let module = dev.ctx.load_module(cudarc::nvrtc::Ptx::from_src(gpu.ptx.clone())).map_err(cuda(format_args!(
            "loading the {} PTX on {} (a driver older than the PTX's ISA version refuses it: update the NVIDIA driver)",
            gpu.arch, dev.name
        )))?;
        let mut kernels = HashMap::new();
        for (meta, abi) in want {
            let func = module
                .load_function(&meta.name)
                .map_err(cuda(format_args!("finding kernel `{}` in the PTX", meta.name)))?;
            kernels.insert((meta.variant, meta.init, meta.item), Launchable { func, abi });
        }
        let mut owned = Vec::new();
        for bp in &params {
            let vp = &plan.variants[bp.variant];
            let used = state_use(m, &m.variants[bp.variant].init, &m.variants[bp.variant].update);
            let pshape = vp.pattern.param_shape();
            let mut states = Vec::new();
            for (s, st) in m.states.iter().enumerate() {
                states.push(if used[s] {
                    let shape = if st.shape == Shape::Like { pshape.clone() } else { st.shape.clone() };
                    let what = format!("state `{}` of `{}`", st.name, bp.name);
                    Some(dev.zeros(shape_len(&shape, bp), &what)?)
                } else {
                    None
                });
            }
            let mut temps = Vec::new();
            for shape in &vp.update.temps {
                temps.push(dev.zeros(shape_len(shape, bp), &format!("a temporary of `{}`", bp.name))?);
            }
            owned.push(Owned { states, temps });
        }
        let tables = HashMap::new();
        let counters = Counters::new(m);
        Ok(CudaEngine { plan, dev, kernels, params, owned, io: Vec::new(), tables, counters })
    }

    /// The stream every launch and copy goes to.
    pub fn stream(&self) -> Arc<CudaStream> {
        Arc::clone(&self.dev.stream)
    }

    /// A step on host memory: the parameters and gradients go to the device and the
    /// parameters come back. On an error, or when the gradient check (`check`) stops the
    /// step, the host parameters are unchanged.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]], check: bool) -> Result<Outcome, RuntimeError> {
        let lens: Vec<(usize, usize)> = params.iter().zip(grads).map(|(p, g)| (p.len(), g.len())).collect();
        interp::check_step_args(&self.params, params.len(), grads.len(), &lens)?;
        self.dev.bind()?;
        if self.io.is_empty() {
            for bp in &self.params {
                let p = self.dev.zeros(bp.numel, &format!("parameter `{}`", bp.name))?;
                let g = self.dev.zeros(bp.numel, &format!("gradient `{}`", bp.name))?;
                self.io.push((p, g));
            }
        }
        let stream = &self.dev.stream;
        let pp: Vec<DevPtr> = self.io.iter().map(|(p, _)| p.ptr(stream)).collect();
        let gp: Vec<DevPtr> = self.io.iter().map(|(_, g)| g.ptr(stream)).collect();
        for (i, bp) in self.params.iter().enumerate() {
            self.dev.upload(pp[i], params[i], &format!("parameter `{}`", bp.name))?;
            self.dev.upload(gp[i], grads[i], &format!("gradient `{}`", bp.name))?;
        }
        let outcome = self.step_ptrs(&pp, &gp, check)?;
        if outcome == Outcome::Stepped {
            for (i, bp) in self.params.iter().enumerate() {
                self.dev.download(pp[i], params[i], &format!("parameter `{}`", bp.name))?;
            }
        }
        Ok(outcome)
    }

    /// A step on device buffers of this engine's context. Work queued on the buffers' own
    /// streams is waited for first; the step is complete when this returns.
    pub fn step_device(
        &mut self,
        params: &mut [&mut CudaSlice<f32>],
        grads: &[&CudaSlice<f32>],
        check: bool,
    ) -> Result<Outcome, RuntimeError> {
        let lens: Vec<(usize, usize)> = params.iter().zip(grads).map(|(p, g)| (p.len(), g.len())).collect();
        interp::check_step_args(&self.params, params.len(), grads.len(), &lens)?;
        self.dev.bind()?;
        let ours = self.dev.stream.cu_stream();
        let mut waited = vec![ours];
        for (i, bp) in self.params.iter().enumerate() {
            for (what, s) in [("parameter", &*params[i]), ("gradient", grads[i])] {
                if s.context().cu_ctx() != self.dev.ctx.cu_ctx() {
                    return Err(RuntimeError::Cuda(format!(
                        "the {what} `{}` lives in another CUDA context than the optimizer's (device {}); \
                         allocate it on `Optimizer::cuda_stream()`",
                        bp.name, self.dev.ordinal
                    )));
                }
                let theirs = s.stream();
                if !waited.contains(&theirs.cu_stream()) {
                    theirs
                        .synchronize()
                        .map_err(cuda(format_args!("waiting for the {what} `{}`'s stream", bp.name)))?;
                    waited.push(theirs.cu_stream());
                }
            }
        }
        let stream = &self.dev.stream;
        let pp: Vec<DevPtr> = params.iter().map(|p| slice_ptr(p, p.len(), stream)).collect();
        let gp: Vec<DevPtr> = grads.iter().map(|g| slice_ptr(g, g.len(), stream)).collect();
        self.step_ptrs(&pp, &gp, check)
    }

    /// The step proper, as the CPU engine's: initialise at the first step, count, run the
    /// prelude, run the update; a failed update does not count.
    fn step_ptrs(&mut self, pp: &[DevPtr], gp: &[DevPtr], check: bool) -> Result<Outcome, RuntimeError> {
        let plan = Arc::clone(&self.plan);
        counted_step(self, &plan, check, |e, run, outs| e.run_all_with(run, pp, gp, outs))
    }

    /// The device address of buffer `b` of parameter `i`. Initialisers read the parameter
    /// (and see it as their gradient, as on the CPU) but must not write it.
    fn buffer_ptr(
        &self,
        i: usize,
        b: Buffer,
        init: bool,
        pp: &[DevPtr],
        gp: &[DevPtr],
        init_temps: &[Vec<DevBuf<f32>>],
    ) -> Result<DevPtr, RuntimeError> {
        let stream = &self.dev.stream;
        Ok(match b {
            Buffer::Input(_) => {
                return Err(RuntimeError::NotOnBackend(
                    "per-step inputs (K-FAC, Sophia-G) run on the cpu and interp backends; the CUDA engine does not take them yet",
                ))
            }
            Buffer::Param => pp[i],
            Buffer::Grad if init => pp[i],
            Buffer::Grad => gp[i],
            Buffer::State(s) => match self.owned[i].states[s].as_ref() {
                Some(x) => x.ptr(stream),
                None => return Err(internal(format!("state `{}` is not allocated", self.plan.module.states[s].name))),
            },
            Buffer::Temp(t) => {
                let temps = if init { init_temps.get(i) } else { None };
                let buf = match temps {
                    Some(temps) => temps.get(t),
                    None => self.owned[i].temps.get(t),
                };
                buf.ok_or_else(|| internal(format!("temporary t{t} is not allocated")))?.ptr(stream)
            }
        })
    }

    /// Runs the init plan, the update plan or the update plan's gradient check of every
    /// parameter, variant by variant, each kernel item as one launch over all the parameters
    /// of that variant; returns the non-finite counts a check found (member, count).
    fn run_all_with(
        &mut self,
        what: Run,
        pp: &[DevPtr],
        gp: &[DevPtr],
        prepare_outs: &[f64],
    ) -> Result<Vec<(usize, f64)>, RuntimeError> {
        let plan = Arc::clone(&self.plan);
        let m = &plan.module;
        let init = what == Run::Init;
        let mut non_finite = Vec::new();
        let mut stores = Vec::new();
        let mut init_temps: Vec<Vec<DevBuf<f32>>> = Vec::new();
        if init {
            for bp in &self.params {
                let fp = &plan.variants[bp.variant].init;
                let mut temps = Vec::new();
                for shape in &fp.temps {
                    temps.push(self.dev.zeros(shape_len(shape, bp), "an initialiser's temporary")?);
                }
                init_temps.push(temps);
            }
        }
        let (active, mut runs) = self.variant_runs(&plan, what, prepare_outs)?;
        in_fold_order(&plan, &active, init, what.pass(), &mut runs, |vi, items, members, envs| {
            let (func, fplan) = if init {
                (&m.variants[vi].init, &plan.variants[vi].init)
            } else {
                (&m.variants[vi].update, &plan.variants[vi].update)
            };
            for (ii, item) in fplan.items_of(what.pass()).filter(|(ii, _)| items.contains(ii)) {
                match item {
                    Item::Kernel(k) => {
                        let key = (vi, init, ii);
                        self.run_kernel(key, k, func, members, envs, pp, gp, &init_temps, prepare_outs)?;
                        non_finite.extend(non_finite_after(fplan, ii, members, envs));
                    }
                    Item::Lib(l) => {
                        let jobs = self.item_members((m, func), &l.scalars, l.guard, members, envs, prepare_outs)?;
                        for mi in jobs {
                            self.run_lib(l, func, members[mi], envs, mi, init, pp, gp, &init_temps)?;
                        }
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
            self.counters_mut().globals[gi] = x;
        }
        // The initialisers' temporaries are freed on return: let their users finish.
        self.dev.sync(match what {
            Run::Init => "initialising the state",
            Run::Check => "the gradient check",
            Run::Step => "the update",
        })?;
        Ok(non_finite)
    }

    /// Launches one kernel item over every parameter of its variant whose guard holds;
    /// combines the reductions into `envs` and writes axis-reduction outputs.
    #[allow(clippy::too_many_arguments)]
    fn run_kernel(
        &mut self,
        key: (usize, bool, usize),
        k: &Kernel,
        func: &Func,
        members: &[usize],
        envs: &mut Scalars,
        pp: &[DevPtr],
        gp: &[DevPtr],
        init_temps: &[Vec<DevBuf<f32>>],
        prepare_outs: &[f64],
    ) -> Result<(), RuntimeError> {
        let init = key.1;
        let m = &self.plan.module;
        let Some(kl) = self.kernels.get(&key) else {
            return Err(internal(format!("kernel k{} has no GPU code", k.id)));
        };
        let abi = &kl.abi;
        let mut calls: Vec<Call> = Vec::with_capacity(members.len());
        let mut flat_ptrs: Vec<u64> = Vec::with_capacity(members.len() * abi.buffers.len());
        let mut flat_scalars: Vec<f32> = Vec::with_capacity(members.len() * abi.scalars.len().max(1));
        let run = self.item_members((m, func), &k.scalars, k.guard, members, envs, prepare_outs)?;
        for mi in run {
            let i = members[mi];
            // This call's rows of the scalar and pointer tables, straight into the tables.
            for v in &abi.scalars {
                let x = self.scalar_for((m, func), *v, envs, (mi, i), prepare_outs)?;
                flat_scalars.push(x as f32);
            }
            if abi.scalars.is_empty() {
                flat_scalars.push(0.0);
            }
            let mut aligned = true;
            for b in &abi.buffers {
                let addr = self.buffer_ptr(i, *b, init, pp, gp, init_temps)?.addr;
                aligned &= addr % 16 == 0;
                flat_ptrs.push(addr);
            }
            if init && abi.buffers.contains(&Buffer::Param) && writes_param(k) {
                return Err(internal("an initialiser writes the parameter".into()));
            }
            let bp = &self.params[i];
            let sizes = [bp.numel as u64, bp.rows as u64, bp.cols as u64];
            calls.push(Call { mi, param: i, sizes, aligned, len: shape_len(&k.domain, bp) });
        }
        if calls.is_empty() {
            return Ok(());
        }
        // The chunks and the reductions' layout: the ABI's, shared with the tests.
        let domain = names(&k.domain);
        let mut extents = Vec::with_capacity(calls.len());
        for c in &calls {
            let (rows, cols) = if abi.mode == Mode::Grid { grid_dims(&domain, c.sizes)? } else { (0, 0) };
            extents.push(abi::CallExtent { len: c.len, rows, cols });
        }
        let chunking = abi::Chunking::new(abi, &extents, abi::CHUNKS);
        let npartials = chunking.partials;
        let chunks = chunking.table();
        let mut partials = vec![0.0f64; npartials];
        if !chunking.chunks.is_empty() {
            let mut flat_sizes: Vec<i64> = Vec::with_capacity(abi::SIZES_STRIDE * calls.len());
            for c in &calls {
                flat_sizes.extend([c.sizes[0] as i64, c.sizes[1] as i64, c.sizes[2] as i64, i64::from(c.aligned)]);
            }
            let dev = &self.dev;
            let t = self.tables.entry(key).or_insert_with(Tables::new);
            let ptrs = t.ptrs.upload(dev, &flat_ptrs, "the pointer table")?;
            let scalars = t.scalars.upload(dev, &flat_scalars, "the scalar table")?;
            let sizes = t.sizes.upload(dev, &flat_sizes, "the size table")?;
            let chunk_table = t.chunks.upload(dev, &chunks, "the chunk table")?;
            let parts = t.partials.ensure(dev, npartials.max(1), "the partial reductions")?;
            let nchunks = chunking.chunks.len() as i64;
            let grid = chunking.chunks.len().min(8 * dev.multiprocessors as usize).max(1) as u32;
            let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (abi::BLOCK, 1, 1), shared_mem_bytes: 0 };
            let name = abi::kernel_name(key.0, key.1, key.2);
            let mut launch = dev.stream.launch_builder(&kl.func);
            launch.arg(&ptrs).arg(&scalars).arg(&sizes).arg(&chunk_table).arg(&nchunks).arg(&parts.addr);
            // SAFETY: the kernel follows `gdc_compiler::gpu::abi` (its metadata was checked
            // against this plan): it reads the tables just uploaded (each as long as the
            // calls and chunks it is told of), touches elements `start..end` (or rows) of
            // buffers whose lengths `bind` checked against each parameter's sizes, and
            // writes its chunks' slots of `partials`, sized for every chunk above.
            unsafe { launch.launch(cfg) }.map_err(cuda(format_args!("launching {name} on {}", dev.name)))?;
            if npartials > 0 {
                dev.download(DevPtr { addr: parts.addr, len: npartials }, &mut partials, "partial reductions")?;
            }
        }
        // Reductions combined in chunk order (as the CPU combines them).
        let combined = chunking.combine(func, abi, &extents, &partials);
        for (ci, c) in calls.iter().enumerate() {
            for (ri, r) in abi.reductions.iter().enumerate() {
                envs.set(c.mi, *r, combined.full[ci][ri]);
            }
        }
        // Axis-reduction outputs, as float32, where their guards hold.
        for (ci, c) in calls.iter().enumerate() {
            for (ai, (v, _)) in abi.axis_reductions.iter().enumerate() {
                for o in k.outputs.iter().filter(|o| o.value == *v) {
                    if let Some(g) = o.guard {
                        let x = self.scalar_for((m, func), g, envs, (c.mi, c.param), prepare_outs)?;
                        if x == 0.0 {
                            continue;
                        }
                    }
                    let values: Vec<f32> = combined.axis[ci][ai].iter().map(|x| *x as f32).collect();
                    let dst = self.buffer_ptr(c.param, o.buffer, init, pp, gp, init_temps)?;
                    if dst.len != values.len() {
                        return Err(internal(format!(
                            "axis reduction {v} has {} values, its output buffer {}",
                            values.len(),
                            dst.len
                        )));
                    }
                    self.dev.upload(dst, &values, "an axis reduction")?;
                }
            }
        }
        Ok(())
    }

    /// Runs one library call for parameter `i`: a product, transpose or outer product on
    /// cuBLAS; anything else on the host (operands down, result up), as the CPU does it.
    #[allow(clippy::too_many_arguments)]
    fn run_lib(
        &self,
        l: &LibCall,
        func: &Func,
        i: usize,
        env: &Scalars,
        mi: usize,
        init: bool,
        pp: &[DevPtr],
        gp: &[DevPtr],
        init_temps: &[Vec<DevBuf<f32>>],
    ) -> Result<(), RuntimeError> {
        let Buffer::Temp(_) = l.output else {
            return Err(internal("a library call writes a non-temporary".into()));
        };
        let out = self.buffer_ptr(i, l.output, init, pp, gp, init_temps)?;
        let inst = func.inst(l.inst);
        let bp = &self.params[i];
        // Each operand: a device buffer or a host scalar, with its sizes.
        let mut args: Vec<(Result<DevPtr, f64>, Vec<usize>)> = Vec::new();
        for a in &inst.args {
            let ty = func.ty(*a);
            let sizes = operand_sizes(&ty.shape, bp);
            if ty.is_scalar() && !l.inputs.iter().any(|(v, _)| v == a) {
                let x = env.get(mi, *a).ok_or_else(|| internal(format!("{a} is not available")))?;
                args.push((Err(x), sizes));
                continue;
            }
            let Some((_, b)) = l.inputs.iter().find(|(v, _)| v == a) else {
                return Err(internal(format!("library call reads {a}, which it did not list")));
            };
            args.push((Ok(self.buffer_ptr(i, *b, init, pp, gp, init_temps)?), sizes));
        }
        let buf = |n: usize| -> Result<(DevPtr, &[usize]), RuntimeError> {
            match args.get(n) {
                Some((Ok(p), sizes)) => Ok((*p, sizes)),
                _ => Err(internal(format!("{:?} is missing matrix operand {n}", inst.op))),
            }
        };
        // cuBLAS must not write an operand it reads; such a call (not made by today's plans)
        // runs on the host like a decomposition.
        let aliased = args.iter().any(|(a, _)| matches!(a, Ok(p) if p.addr == out.addr));
        match &inst.op {
            Op::MatMul { ta, tb, .. } if !aliased => {
                let ((a, asz), (b, bsz)) = (buf(0)?, buf(1)?);
                let bits = match args.get(2) {
                    Some((Err(x), _)) => *x,
                    _ => F32_BITS,
                };
                self.matmul(a, asz, *ta, b, bsz, *tb, out, bits)
            }
            Op::Transpose if !aliased => {
                let (a, asz) = buf(0)?;
                let [r, c] = asz[..] else { return Err(internal(format!("transpose of sizes {asz:?}"))) };
                if a.len != r * c || out.len != r * c {
                    return Err(internal(format!("transpose of {r}x{c} does not fit its buffers")));
                }
                if r * c == 0 {
                    return Ok(());
                }
                let (one, zero) = (1.0f32, 0.0f32);
                // Row-major a (r x c) is column-major a^T (c x r, leading dimension c); the
                // row-major result (c x r) is column-major r x c = a: op(a^T) = T.
                let blas = self.blas()?;
                // SAFETY: `a` holds r*c elements, `out` r*c (checked above); alpha and beta
                // are host values (the handle's default pointer mode); beta = 0, so the second
                // operand (a again, same layout) is not read.
                unsafe {
                    cublasSgeam(
                        *blas.handle(),
                        cublasOperation_t::CUBLAS_OP_T,
                        cublasOperation_t::CUBLAS_OP_T,
                        int(r, "rows")?,
                        int(c, "cols")?,
                        &one,
                        a.addr as *const f32,
                        int(c, "cols")?,
                        &zero,
                        a.addr as *const f32,
                        int(c, "cols")?,
                        out.addr as *mut f32,
                        int(r, "rows")?,
                    )
                    .result()
                }
                .map_err(cuda("cuBLAS transpose (sgeam)"))
            }
            Op::Outer if !aliased => {
                let ((a, asz), (b, bsz)) = (buf(0)?, buf(1)?);
                let (n, k) = (asz.iter().product::<usize>(), bsz.iter().product::<usize>());
                if a.len != n || b.len != k || out.len != n * k {
                    return Err(internal(format!("outer product of {asz:?} and {bsz:?} does not fit its buffers")));
                }
                if n * k == 0 {
                    return Ok(());
                }
                // Row-major out (n x k) = column-major k x n = b a^T: a product with inner
                // dimension 1.
                self.sgemm(false, false, k, n, 1, b, k, a, 1, out, k, F32_BITS)
            }
            op => {
                let mut host: Vec<(Vec<f32>, Vec<usize>)> = Vec::new();
                for (arg, sizes) in &args {
                    match arg {
                        Err(x) => host.push((vec![*x as f32], sizes.clone())),
                        Ok(p) => {
                            let mut data = vec![0.0f32; p.len];
                            self.dev.download(*p, &mut data, "a library call's operand")?;
                            host.push((data, sizes.clone()));
                        }
                    }
                }
                let operands: Vec<crate::linalg::Operand> = host.iter().map(|(d, sz)| (&d[..], sz.clone())).collect();
                let mut result = vec![0.0f32; out.len];
                crate::linalg::run(op, &operands, &mut result, 1)?;
                self.dev.upload(out, &result, "a library call's result")
            }
        }
    }

    fn blas(&self) -> Result<&cudarc::cublas::CudaBlas, RuntimeError> {
        self.dev.blas.as_ref().ok_or_else(|| internal("cuBLAS was not opened for a plan that needs it".into()))
    }

    /// `op(a) @ op(b)` for row-major operands, as the CPU's `linalg::matmul`: a vector
    /// operand is a row (left) or a column (right); the operands keep `bits` bits of
    /// significand (`Op::MatMul`'s precision).
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        a: DevPtr,
        asz: &[usize],
        ta: bool,
        b: DevPtr,
        bsz: &[usize],
        tb: bool,
        out: DevPtr,
        bits: f64,
    ) -> Result<(), RuntimeError> {
        // (rows, cols) of x's row-major storage, and whether op(x) transposes it.
        let stored = |sz: &[usize], t: bool, left: bool| -> Option<(usize, usize, bool)> {
            match sz {
                [r, c] => Some((*r, *c, t)),
                [n] if left => Some((1, *n, false)),
                [n] => Some((*n, 1, false)),
                _ => None,
            }
        };
        let (Some((ar, ac, ta)), Some((br, bc, tb))) = (stored(asz, ta, true), stored(bsz, tb, false)) else {
            return Err(internal(format!("matmul of {asz:?} and {bsz:?} does not fit")));
        };
        let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if tb { (bc, br) } else { (br, bc) };
        if k != k2 || a.len != ar * ac || b.len != br * bc || out.len != m * n {
            return Err(internal(format!("matmul of {asz:?} and {bsz:?} does not fit")));
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return self.dev.memset_zero::<f32>(out, "an empty product");
        }
        // Row-major out (m x n) is column-major out^T (n x m) = op(b)^T op(a)^T, and row-major
        // storage of x is column-major x^T (leading dimension: x's columns).
        self.sgemm(tb, ta, n, m, k, b, bc, a, ac, out, n, bits)
    }

    /// Column-major `c (m x n) = op(a) (m x k) op(b) (k x n)` on cuBLAS, float32 in and out,
    /// accumulated in float32: `sgemm` for float32 operands; for bf16 and TF32 (`bits` 8 and
    /// 11) `cublasGemmEx` with the compute type that rounds the operands to that precision
    /// on the tensor cores (`CUBLAS_COMPUTE_32F_FAST_16BF`, `_FAST_TF32`).
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: DevPtr,
        lda: usize,
        b: DevPtr,
        ldb: usize,
        c: DevPtr,
        ldc: usize,
        bits: f64,
    ) -> Result<(), RuntimeError> {
        use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let (one, zero) = (1.0f32, 0.0f32);
        let blas = self.blas()?;
        let compute = match bits {
            BF16_BITS => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF),
            TF32_BITS => Some(cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
            _ => None,
        };
        let (m, n, k) = (int(m, "m")?, int(n, "n")?, int(k, "k")?);
        let (lda, ldb, ldc) = (int(lda, "lda")?, int(ldb, "ldb")?, int(ldc, "ldc")?);
        // SAFETY: the callers checked that `a`, `b` and `c` hold the m*k, k*n and m*n elements
        // these dimensions and leading dimensions address; alpha and beta are host float32
        // values (the handle's default pointer mode, the scale type of a 32F compute type);
        // beta = 0, so `c` is only written.
        unsafe {
            match compute {
                None => cudarc::cublas::result::sgemm(
                    *blas.handle(),
                    op(ta),
                    op(tb),
                    m,
                    n,
                    k,
                    &one,
                    a.addr as *const f32,
                    lda,
                    b.addr as *const f32,
                    ldb,
                    &zero,
                    c.addr as *mut f32,
                    ldc,
                ),
                Some(compute) => cudarc::cublas::result::gemm_ex(
                    *blas.handle(),
                    op(ta),
                    op(tb),
                    m,
                    n,
                    k,
                    (&one as *const f32).cast(),
                    a.addr as *const std::ffi::c_void,
                    cudaDataType::CUDA_R_32F,
                    lda,
                    b.addr as *const std::ffi::c_void,
                    cudaDataType::CUDA_R_32F,
                    ldb,
                    (&zero as *const f32).cast(),
                    c.addr as *mut std::ffi::c_void,
                    cudaDataType::CUDA_R_32F,
                    ldc,
                    compute,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                ),
            }
        }
        .map_err(cuda("cuBLAS matrix product (sgemm, gemmEx)"))
    }
}

/// Rows and columns of a grid kernel's matrix domain for a parameter.
fn grid_dims(domain: &[String], sizes: [u64; 3]) -> Result<(usize, usize), RuntimeError> {
    match domain {
        [r, c] => Ok((size_of(r, sizes), size_of(c, sizes))),
        _ => Err(internal(format!("a grid kernel over {domain:?}, which is not a matrix"))),
    }
}

impl HostSide for CudaEngine {
    /// Element 0 of state `s` of parameter `i`, downloaded (scalar state read on the host).
    fn state_element(&self, i: usize, s: usize) -> Result<Option<f32>, RuntimeError> {
        let Some(buf) = self.owned[i].states[s].as_ref().filter(|b| b.len() > 0) else { return Ok(None) };
        let mut x = [0.0f32];
        self.dev.download(buf.ptr(&self.dev.stream), &mut x, "a scalar state")?;
        Ok(Some(x[0]))
    }
}

impl StateStore for CudaEngine {
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
        self.owned.get(i)?.states.get(s)?.as_ref().map(|x| x.len())
    }

    fn state_copy(&self, i: usize, s: usize) -> Result<Option<Vec<f32>>, RuntimeError> {
        if !self.counters.initialised {
            return Ok(None);
        }
        let Some(buf) = self.owned.get(i).and_then(|o| o.states.get(s)).and_then(|x| x.as_ref()) else {
            return Ok(None);
        };
        self.dev.bind()?;
        let mut data = vec![0.0f32; buf.len()];
        self.dev.download(buf.ptr(&self.dev.stream), &mut data, "a state tensor")?;
        Ok(Some(data))
    }

    fn set_state(&mut self, i: usize, s: usize, data: &[f32]) -> Result<bool, RuntimeError> {
        let Some(buf) = self.owned.get(i).and_then(|o| o.states.get(s)).and_then(|x| x.as_ref()) else {
            return Ok(false);
        };
        if buf.len() != data.len() {
            return Ok(false);
        }
        self.dev.bind()?;
        self.dev.upload(buf.ptr(&self.dev.stream), data, "a state tensor")?;
        self.dev.sync("loading a state tensor")?;
        Ok(true)
    }
}
