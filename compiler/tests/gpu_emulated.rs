//! The GPU kernels executed on the CPU: every kernel of every example optimizer (init and
//! update plans of every variant), as `gpu::mlir::module_text` emits it, run faithfully on
//! host threads and compared with the CPU backend's Cranelift kernels, which are known
//! correct (golden replays, battery).
//!
//! Emulation: the emitted text is rewritten into a host module (the `gpu.module`'s functions
//! become `func.func`s taking block id, block count and thread id as three extra arguments;
//! address spaces dropped; `gpu.barrier` a call into Rust; `sqrt.rn` `math.sqrt`; the
//! shared-memory array an external global that Rust provides, so LLVM cannot assume the
//! barrier leaves it alone), lowered to the LLVM dialect and JIT-compiled by MLIR's
//! execution engine (melior). A launch runs its blocks one after another (3 blocks, so
//! blocks stride over chunks), each as 256 OS threads meeting at a real barrier (a barrier
//! not reached by every thread aborts the test after a timeout instead of hanging). Nothing
//! else about the kernel changes: its tables, chunking, vector path, tree reductions and
//! partials layout are the ones the CUDA runtime uses, built here as
//! `runtime/src/cuda/engine.rs` builds them; the host then combines the partials in chunk
//! order and writes axis reductions to their buffers where their guards hold, as that
//! engine does. What this cannot check: libdevice's `exp`/`log`/`pow`/`%` (the emulation
//! links the host's libm, as the CPU backend does), and anything the NVPTX backend or ptxas
//! do (contraction into FMA, the real memory model).
//!
//! Each launch binds several parameters (calls) to its variant with awkward shapes: vectors
//! of 1, 3, 4, 1023 and 32775 elements (two full flat chunks and a tail), matrices 1x1,
//! 5x7, 37x129, 130x3, 2x3x4 and 3x6000 (two grid chunks, two flat chunks); a shape is left
//! out of a variant where it would give a buffer or domain of more than 40000 elements
//! (Shampoo's `[rows, rows]` statistics of a long vector). Every third call's buffers are
//! deliberately not 16-byte aligned (so the call takes the scalar path, `aligned = 0`, as
//! the runtime decides). Inputs are random (xorshift; state and temporaries positive on
//! even calls), boolean scalars (and output guards, `select` conditions) are 1 on a
//! launch's first call, 0 on its second and random after, other scalars random (sometimes
//! exactly 0 or 1), output-only buffers are poisoned with a sentinel in both runs, every
//! buffer has canaries on both sides, and every partials slot starts poisoned (a kernel
//! must write each of its chunk's slots). Every kernel must change some element of some
//! call, or the data missed it.
//!
//! Compared: every buffer of every call, canaries included, bit for bit (NaN equals NaN):
//! both backends do IEEE float32 operations in the same order, and the PTX uses `.rn`
//! operations, which ptxas does not contract into FMAs. Kernels calling `exp`, `log`, `pow`
//! or `%` (none of the examples' kernels do today: those are host scalars) may differ by
//! 1e-5 relative, as two libms may. Every full reduction: float64, relative 1e-9 (both
//! backends accumulate float32 values in float64; only the order differs).
//!
//! Muon has several hundred kernels (a few per unrolled Newton-Schulz step); its kernels are
//! sampled: the first and last 5, every 40th, and the first of each kernel shape (mode,
//! domain, numbers of buffers, scalars, reductions, instructions, outputs). Every other
//! example runs every kernel.

#![cfg(feature = "mlir")]
#![allow(unsafe_code)]

mod common;

use common::Rng;
use gdc_compiler::chunks::{CallExtent, Chunking, Combined};
use gdc_compiler::cpu::abi::{self as cpu_abi, KernelAbi, KernelFn, Mode};
use gdc_compiler::gpu::{abi as gabi, mlir};
use gdc_compiler::interp::{self, BoundParam};
use gdc_compiler::ir::{Binary, Func, Op, Unary};
use gdc_compiler::plan::{Buffer, Item, Kernel, Plan};
use gdc_dsl::types::Elem;
use melior::dialect::DialectRegistry;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::{Context, ExecutionEngine};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

const BLOCK: usize = gabi::BLOCK as usize;
/// Blocks per emulated launch: fewer than most launches' chunks, so blocks stride.
const BLOCKS: usize = 3;
/// What output-only buffers hold before a kernel runs.
const SENTINEL: f32 = 12345.0;
/// What the elements either side of every buffer hold.
const CANARY: f32 = -8675.309;
/// Canary elements either side of a buffer.
const PAD: usize = 8;
/// What every partials slot holds before a launch.
const PARTIAL_POISON: f64 = 1.0e300;

/// Parameter shapes; each binds to the variant whose pattern it matches.
const SHAPES: &[&[usize]] = &[
    &[],
    &[1],
    &[3],
    &[4],
    &[1023],
    &[2 * gabi::FLAT_CHUNK + 7],
    &[1, 1],
    &[5, 7],
    &[37, 129],
    &[130, 3],
    &[2, 3, 4],
    &[3, 6000],
    // Rank 3 and 4 (an update with per-axis state takes them, not the matrix update).
    &[4, 3, 33],
    &[3, 1, 5, 2],
];

/// The most elements a shape may give any buffer or domain of its variant (a vector of
/// 32775 would need a [rows, rows] statistic of a billion).
const MAX_ELEMENTS: usize = 40_000;

// ---------------------------------------------------------------------------------------
// The host module.

/// Rewrites the emitted `gpu.module` text into a host module holding the kernels `keep`
/// names; returns it and the kernels it holds.
fn host_module(text: &str, keep: &BTreeSet<String>) -> (String, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first().copied(), Some("module attributes {gpu.container_module} {"), "module header");
    assert_eq!(lines.get(1).map(|l| l.trim()), Some("gpu.module @gdc {"), "gpu.module header");
    let n = lines.len();
    assert!(n >= 4 && lines[n - 1] == "}" && lines[n - 2].trim() == "}", "module ends with two braces");
    let mut out = String::from("module {\n  func.func private @gdc_emu_barrier()\n");
    let mut names = Vec::new();
    let mut i = 2;
    while i < n - 2 {
        let line = lines[i];
        let t = line.trim();
        if t.starts_with("llvm.mlir.global internal @gdc_red()") {
            assert_eq!(
                t,
                format!("llvm.mlir.global internal @gdc_red() {{addr_space = 3 : i32}} : !llvm.array<{BLOCK} x f64>"),
                "the shared array"
            );
            out.push_str(&format!("  llvm.mlir.global external @gdc_red() : !llvm.array<{BLOCK} x f64>\n"));
            i += 1;
            continue;
        }
        let Some(rest) = t.strip_prefix("gpu.func @") else { panic!("unexpected line {}: {line}", i + 1) };
        let name = rest[..rest.find('(').expect("a signature")].to_string();
        let args_end = rest.rfind(") kernel {").expect("a kernel signature");
        let args = rest[rest.find('(').unwrap() + 1..args_end].replace("!llvm.ptr<1>", "!llvm.ptr");
        // The function's lines up to its closing brace (4 spaces, as emitted).
        let mut j = i + 1;
        while lines[j] != "    }" {
            j += 1;
        }
        if keep.contains(&name) {
            let mut ids: HashMap<&str, String> = HashMap::new();
            let mut body = String::new();
            for l in &lines[i + 1..j] {
                let lt = l.trim();
                let mut handled = false;
                for op in ["block_id", "grid_dim", "thread_id"] {
                    if let Some(lhs) = lt.strip_suffix(&format!(" = gpu.{op} x")) {
                        ids.insert(op, lhs.to_string());
                        handled = true;
                    }
                }
                if handled {
                    continue;
                }
                let mut l = l.replace("!llvm.ptr<1>", "!llvm.ptr").replace("!llvm.ptr<3>", "!llvm.ptr");
                if lt == "gpu.barrier" {
                    l = l.replace("gpu.barrier", "func.call @gdc_emu_barrier() : () -> ()");
                } else if lt == "gpu.return" {
                    l = l.replace("gpu.return", "return");
                } else if let Some(at) = l.find("llvm.call_intrinsic \"llvm.nvvm.sqrt.rn.f\"(") {
                    let from = at + "llvm.call_intrinsic \"llvm.nvvm.sqrt.rn.f\"(".len();
                    let arg = &l[from..from + l[from..].find(')').unwrap()];
                    assert!(l.ends_with(") : (f32) -> f32"), "sqrt.rn on f32: {l}");
                    l = format!("{}math.sqrt {arg} : f32", &l[..at]);
                }
                assert!(!l.contains("gpu.") && !l.contains("nvvm"), "no host equivalent for: {l}");
                body.push_str(&l);
                body.push('\n');
            }
            assert_eq!(ids.len(), 3, "{name}: block id, grid size and thread id");
            out.push_str(&format!(
                "  func.func @{name}({args}, {}: index, {}: index, {}: index) {{\n",
                ids["block_id"], ids["grid_dim"], ids["thread_id"]
            ));
            out.push_str(&body);
            out.push_str("  }\n");
            names.push(name);
        }
        i = j + 1;
    }
    out.push_str("}\n");
    (out, names)
}

/// The generated GPU entry point on the host: the ABI's six arguments, then block id,
/// block count and thread id.
type EmuKernel =
    unsafe extern "C" fn(*const u64, *const f32, *const i64, *const i64, i64, *mut f64, usize, usize, usize);

/// The JIT-compiled host module of one example.
struct Jit {
    engine: ExecutionEngine,
    // Keeps the module (and its context) alive as long as the engine.
    _module: Module<'static>,
    _context: &'static Context,
    /// The shared-memory array every block of a launch uses in turn.
    _shared: Box<[f64; BLOCK]>,
}

static REGISTER_PASSES: Once = Once::new();

impl Jit {
    fn new(host: &str) -> Jit {
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        // Leaked: one per example, for the life of the test.
        let context: &'static Context = Box::leak(Box::new(Context::new()));
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        REGISTER_PASSES.call_once(register_all_passes);
        register_all_llvm_translations(context);
        let mut module =
            Module::parse(context, host).unwrap_or_else(|| panic!("the host module does not parse:\n{host}"));
        let pm = PassManager::new(context);
        parse_pass_pipeline(
            pm.as_operation_pass_manager(),
            "builtin.module(convert-scf-to-cf,convert-math-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,\
             convert-cf-to-llvm,reconcile-unrealized-casts)",
        )
        .expect("the host pipeline parses");
        pm.run(&mut module).expect("the host module lowers to the LLVM dialect");
        let engine = ExecutionEngine::new(&module, 2, &[], false, true);
        let mut shared = Box::new([0.0f64; BLOCK]);
        // SAFETY: both symbols outlive the engine (the barrier is a function; the array is
        // owned by the same `Jit`); the kernels call the barrier with no arguments and index
        // the array below BLOCK, as its declared type says.
        unsafe {
            engine.register_symbol("gdc_emu_barrier", emu_barrier as *mut ());
            engine.register_symbol("gdc_red", shared.as_mut_ptr() as *mut ());
        }
        Jit { engine, _module: module, _context: context, _shared: shared }
    }

    fn kernel(&self, name: &str) -> EmuKernel {
        let p = self.engine.lookup(name);
        assert!(!p.is_null(), "the JIT has no function {name}");
        // SAFETY: `name` is a function of the host module with exactly `EmuKernel`'s
        // signature: four pointers, an i64, a pointer and three indices (i64 on this host).
        unsafe { std::mem::transmute::<*mut (), EmuKernel>(p) }
    }
}

// ---------------------------------------------------------------------------------------
// Blocks of threads.

/// A reusable barrier for a block's threads that gives up (aborting the process) when not
/// every thread arrives: a barrier in divergent code would hang a real GPU. Waiters park
/// and the last thread to arrive unparks each (no herd on a mutex).
struct EmuBarrier {
    /// Threads arrived at the current barrier and parked.
    state: Mutex<(usize, Vec<std::thread::Thread>)>,
    generation: AtomicU64,
    n: usize,
}

impl EmuBarrier {
    fn new(n: usize) -> EmuBarrier {
        EmuBarrier { state: Mutex::new((0, Vec::with_capacity(n))), generation: AtomicU64::new(0), n }
    }

    fn wait(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::Acquire);
        g.0 += 1;
        if g.0 == self.n {
            g.0 = 0;
            let waiting = std::mem::take(&mut g.1);
            self.generation.store(generation + 1, Ordering::Release);
            drop(g);
            for t in waiting {
                t.unpark();
            }
            return;
        }
        g.1.push(std::thread::current());
        drop(g);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.generation.load(Ordering::Acquire) == generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let arrived = self.state.lock().unwrap_or_else(|e| e.into_inner()).0;
                eprintln!(
                    "gpu_emulated: a barrier was reached by {arrived} of {} threads of a block (divergent barrier)",
                    self.n
                );
                std::process::abort();
            }
            std::thread::park_timeout(left);
        }
    }
}

thread_local! {
    /// The barrier of the block this thread belongs to.
    static BLOCK_BARRIER: Cell<*const EmuBarrier> = const { Cell::new(std::ptr::null()) };
}

extern "C" fn emu_barrier() {
    let b = BLOCK_BARRIER.with(|c| c.get());
    if b.is_null() {
        eprintln!("gpu_emulated: a barrier outside an emulated block");
        std::process::abort();
    }
    // SAFETY: set by `launch` to a barrier that outlives every thread of the block.
    unsafe { &*b }.wait();
}

/// The tables of one launch, as the CUDA runtime uploads them.
struct Tables {
    ptrs: Vec<u64>,
    scalars: Vec<f32>,
    sizes: Vec<i64>,
    chunks: Vec<i64>,
    partials: Vec<f64>,
}

/// Runs `f` over `BLOCKS` blocks of `BLOCK` threads, one block after another.
fn launch(f: EmuKernel, t: &mut Tables) {
    let nchunks = (t.chunks.len() / gabi::CHUNK_STRIDE) as i64;
    let addrs =
        [t.ptrs.as_ptr() as usize, t.scalars.as_ptr() as usize, t.sizes.as_ptr() as usize, t.chunks.as_ptr() as usize];
    let partials = t.partials.as_mut_ptr() as usize;
    for b in 0..BLOCKS {
        let barrier = EmuBarrier::new(BLOCK);
        let bar = &barrier as *const EmuBarrier as usize;
        std::thread::scope(|s| {
            for tid in 0..BLOCK {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || {
                        BLOCK_BARRIER.with(|c| c.set(bar as *const EmuBarrier));
                        // SAFETY: the kernel follows the GPU ABI: it reads the tables (each
                        // as long as the calls and chunks they describe), touches elements
                        // start..end (or those rows) of buffers sized from the parameter's
                        // shape, and writes its chunks' slots of `partials`; threads of a
                        // block touch disjoint elements between barriers, as on a GPU.
                        unsafe {
                            f(
                                addrs[0] as *const u64,
                                addrs[1] as *const f32,
                                addrs[2] as *const i64,
                                addrs[3] as *const i64,
                                nchunks,
                                partials as *mut f64,
                                b,
                                BLOCKS,
                                tid,
                            )
                        }
                    })
                    .expect("a block's thread starts");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Test data.

fn aligned16(addr: usize) -> bool {
    addr & 15 == 0
}

/// A float32 buffer with canaries either side, 16-byte aligned or deliberately not.
struct Buf {
    data: Vec<f32>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize, misaligned: bool) -> Buf {
        let data = vec![CANARY; len + 2 * PAD + 8];
        let base = data.as_ptr() as usize;
        let mut start = PAD;
        while !aligned16(base + 4 * start) {
            start += 1;
        }
        if misaligned {
            start += 1;
        }
        Buf { data, start, len }
    }

    /// A copy at its own address with the same alignment.
    fn twin(&self) -> Buf {
        let mut b = Buf::new(self.len, !aligned16(self.ptr() as usize));
        b.body_mut().copy_from_slice(self.body());
        b
    }

    fn ptr(&self) -> *const f32 {
        self.data[self.start..].as_ptr()
    }

    fn mut_ptr(&mut self) -> *mut f32 {
        self.data[self.start..].as_mut_ptr()
    }

    fn body(&self) -> &[f32] {
        &self.data[self.start..self.start + self.len]
    }

    fn body_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.start..self.start + self.len]
    }

    fn canaries_intact(&self) -> bool {
        self.data[..self.start]
            .iter()
            .chain(&self.data[self.start + self.len..])
            .all(|x| x.to_bits() == CANARY.to_bits())
    }
}

/// One parameter of a launch: its shape and its buffers for each backend.
struct Call {
    bp: BoundParam,
    scalars: Vec<f32>,
    cpu: Vec<Buf>,
    gpu: Vec<Buf>,
    /// Every buffer's elements before the kernels ran.
    before: Vec<Vec<f32>>,
}

/// Whether `v` is a boolean.
fn is_bool(func: &Func, v: gdc_compiler::ir::Value) -> bool {
    func.ty(v).elem == Elem::Bool
}

/// Whether scalar `v` of kernel `k` is a truth value: a boolean, an output's guard or the
/// condition of a `select` (each of which the CPU backend specialises its loop on).
fn is_condition(func: &Func, k: &Kernel, v: gdc_compiler::ir::Value) -> bool {
    is_bool(func, v)
        || k.outputs.iter().any(|o| o.guard == Some(v))
        || k.body.iter().any(|b| func.inst(*b).op == Op::Select && func.inst(*b).args[0] == v)
}

/// Per buffer of `abi` for `bp`: its number of elements, whether the kernel reads it and
/// whether it holds booleans.
fn buffer_lens(func: &Func, k: &Kernel, abi: &KernelAbi, bp: &BoundParam) -> Vec<(usize, bool, bool)> {
    abi.buffers
        .iter()
        .map(|b| {
            let mut len = 0;
            let mut read = false;
            let mut boolean = false;
            for (v, ib) in &k.inputs {
                if ib == b {
                    len = len.max(interp::elements_of(&func.ty(*v).shape, bp));
                    read = true;
                    boolean |= is_bool(func, *v);
                }
            }
            for o in &k.outputs {
                if o.buffer == *b {
                    len = len.max(interp::elements_of(&func.ty(o.value).shape, bp));
                }
            }
            if matches!(b, Buffer::Param | Buffer::Grad) {
                len = len.max(bp.numel);
            }
            (len, read, boolean)
        })
        .collect()
}

fn make_calls(func: &Func, k: &Kernel, abi: &KernelAbi, params: &[BoundParam], rng: &mut Rng) -> Vec<Call> {
    let mut calls = Vec::new();
    for (ci, bp) in params.iter().enumerate() {
        let misaligned = ci % 3 == 1;
        let positive = ci % 2 == 0;
        let mut cpu = Vec::new();
        for ((len, read, boolean), b) in buffer_lens(func, k, abi, bp).into_iter().zip(&abi.buffers) {
            let mut buf = Buf::new(len, misaligned);
            for x in buf.body_mut() {
                *x = if !read {
                    SENTINEL
                } else if boolean {
                    rng.bit() as u8 as f32
                } else if positive && matches!(b, Buffer::State(_) | Buffer::Temp(_)) {
                    rng.uniform(0.01, 1.0)
                } else {
                    rng.uniform(-1.0, 1.0)
                };
            }
            cpu.push(buf);
        }
        let gpu = cpu.iter().map(Buf::twin).collect();
        let scalars = abi
            .scalars
            .iter()
            .map(|v| {
                if is_condition(func, k, *v) {
                    match ci {
                        0 => 1.0,
                        1 => 0.0,
                        _ => rng.bit() as u8 as f32,
                    }
                } else {
                    match rng.next() % 16 {
                        0 if ci > 1 => 0.0,
                        1 if ci > 1 => 1.0,
                        _ => rng.uniform(0.05, 1.05),
                    }
                }
            })
            .collect();
        let before = cpu.iter().map(|b| b.body().to_vec()).collect();
        calls.push(Call { bp: bp.clone(), scalars, cpu, gpu, before });
    }
    calls
}

// ---------------------------------------------------------------------------------------
// The two backends.

fn sizes_of(bp: &BoundParam) -> [usize; 3] {
    [bp.numel, bp.rows, bp.cols]
}

/// (rows, cols) of a grid kernel's domain for `bp`.
fn grid_dims(k: &Kernel, bp: &BoundParam) -> (usize, usize) {
    let d = interp::names_of(&k.domain);
    (interp::size_of(&d[0], bp), interp::size_of(&d[1], bp))
}

/// Runs the Cranelift kernel on every call as the CPU runtime does (in the chunks of
/// `cpu::abi::CHUNKS`: element ranges, or bands of rows); combines the partials and writes
/// axis reductions as it does; returns each call's full reductions.
fn run_cpu(entry: KernelFn, func: &Func, k: &Kernel, abi: &KernelAbi, calls: &mut [Call]) -> Vec<Vec<f64>> {
    let extents = extents_of(k, abi, calls);
    let chunking = Chunking::new(abi, &extents, cpu_abi::CHUNKS);
    let mut partials = vec![PARTIAL_POISON; chunking.partials.max(1)];
    for ch in &chunking.chunks {
        let c = &mut calls[ch.call];
        let bufs: Vec<*mut f32> = c.cpu.iter_mut().map(Buf::mut_ptr).collect();
        let scalars: Vec<f32> = c.scalars.iter().flat_map(|x| [*x; 4]).collect();
        let sizes = sizes_of(&c.bp).map(|x| x as u64);
        // SAFETY: the CPU ABI: `bufs` holds one pointer per ABI buffer, each as long as the
        // parameter's shape gives; `scalars` four lanes per scalar; `partials` has this
        // chunk's slots from its offset (the chunking's layout).
        unsafe {
            entry(
                bufs.as_ptr(),
                scalars.as_ptr(),
                sizes.as_ptr(),
                ch.start as u64,
                ch.end as u64,
                partials.as_mut_ptr().add(ch.partials),
            )
        };
    }
    let combined = chunking.combine(func, abi, &extents, &partials);
    write_axis(k, abi, calls, &combined, |c| &mut c.cpu);
    combined.full
}

/// Each call's extent: its domain's elements, and a grid kernel's rows and columns.
fn extents_of(k: &Kernel, abi: &KernelAbi, calls: &[Call]) -> Vec<CallExtent> {
    calls
        .iter()
        .map(|c| {
            let (rows, cols) = if abi.mode == Mode::Grid { grid_dims(k, &c.bp) } else { (0, 0) };
            CallExtent { len: interp::elements_of(&k.domain, &c.bp), rows, cols }
        })
        .collect()
}

/// Writes each call's combined axis reductions to their output buffers (of one backend's
/// copies) where their guards hold, as both runtimes do.
fn write_axis(
    k: &Kernel,
    abi: &KernelAbi,
    calls: &mut [Call],
    combined: &Combined,
    bufs: fn(&mut Call) -> &mut Vec<Buf>,
) {
    for (ci, c) in calls.iter_mut().enumerate() {
        for (ai, (v, _)) in abi.axis_reductions.iter().enumerate() {
            for o in k.outputs.iter().filter(|o| o.value == *v) {
                if let Some(g) = o.guard {
                    let gi = abi.scalars.iter().position(|s| *s == g).expect("an output guard is a kernel scalar");
                    if c.scalars[gi] == 0.0 {
                        continue;
                    }
                }
                let slot = abi.buffers.iter().position(|b| *b == o.buffer).expect("an output buffer");
                let dst = bufs(c)[slot].body_mut();
                assert_eq!(dst.len(), combined.axis[ci][ai].len(), "axis reduction {v}: its buffer's length");
                for (d, x) in dst.iter_mut().zip(&combined.axis[ci][ai]) {
                    *d = *x as f32;
                }
            }
        }
    }
}

/// Runs the emulated GPU kernel once over every call, with the CUDA runtime's tables and
/// chunks; combines the partials and writes axis reductions as it does; returns each call's
/// full reductions.
fn run_gpu(f: EmuKernel, func: &Func, k: &Kernel, abi: &KernelAbi, calls: &mut [Call]) -> (Vec<Vec<f64>>, usize) {
    let extents = extents_of(k, abi, calls);
    let chunking = Chunking::new(abi, &extents, gabi::CHUNKS);
    let stride = abi.scalars.len().max(1);
    let mut t = Tables {
        ptrs: Vec::new(),
        scalars: Vec::new(),
        sizes: Vec::new(),
        chunks: chunking.table(),
        partials: vec![PARTIAL_POISON; chunking.partials.max(1)],
    };
    for c in calls.iter_mut() {
        let ptrs: Vec<u64> = c.gpu.iter_mut().map(|b| b.mut_ptr() as u64).collect();
        let aligned = ptrs.iter().all(|p| aligned16(*p as usize));
        t.ptrs.extend(&ptrs);
        let mut s = c.scalars.clone();
        s.resize(stride, 0.0);
        t.scalars.extend(s);
        let [n, r, cc] = sizes_of(&c.bp);
        t.sizes.extend([n as i64, r as i64, cc as i64, aligned as i64]);
    }
    if !chunking.chunks.is_empty() {
        launch(f, &mut t);
    }
    let combined = chunking.combine(func, abi, &extents, &t.partials);
    write_axis(k, abi, calls, &combined, |c| &mut c.gpu);
    (combined.full, chunking.chunks.len())
}

// ---------------------------------------------------------------------------------------
// Comparison.

/// Relative difference of two values, 0 when equal or both NaN.
fn rel_diff(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
        f64::INFINITY
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

fn uses_libm(func: &Func, k: &Kernel) -> bool {
    k.body
        .iter()
        .any(|v| matches!(func.inst(*v).op, Op::Unary(Unary::Exp | Unary::Log) | Op::Binary(Binary::Pow | Binary::Rem)))
}

#[derive(Default)]
struct Stats {
    kernels: usize,
    launches: usize,
    /// Launches of grid kernels.
    grid: usize,
    calls: usize,
    chunks: usize,
    elements: usize,
    /// Elements the kernels changed (on the CPU).
    written: usize,
    reductions: usize,
    worst_elem: f64,
    worst_red: f64,
    failures: Vec<String>,
}

impl Stats {
    fn fail(&mut self, msg: String) {
        if self.failures.len() < 40 {
            self.failures.push(msg);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compare(
    stats: &mut Stats,
    what: &str,
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    calls: &[Call],
    cpu_full: &[Vec<f64>],
    gpu_full: &[Vec<f64>],
) {
    // Float32 arithmetic in the same order on both sides (the PTX uses `.rn` operations,
    // which ptxas does not contract): identical bits. Only libm's functions may differ.
    let libm = uses_libm(func, k);
    for (ci, c) in calls.iter().enumerate() {
        let shape = &c.bp.shape;
        let aligned = c.gpu.iter().all(|b| aligned16(b.ptr() as usize));
        for (bi, b) in abi.buffers.iter().enumerate() {
            let (x, y) = (&c.cpu[bi], &c.gpu[bi]);
            if !x.canaries_intact() {
                stats.fail(format!("{what}: call {ci} {shape:?}: the CPU kernel wrote outside buffer {b:?}"));
            }
            if !y.canaries_intact() {
                stats.fail(format!(
                    "{what}: call {ci} {shape:?} (aligned {aligned}): the GPU kernel wrote outside buffer {b:?}"
                ));
            }
            let mut bad = 0;
            let mut first = None;
            for (i, (a, g)) in x.body().iter().zip(y.body()).enumerate() {
                let d = rel_diff(*a as f64, *g as f64);
                if d.is_finite() {
                    stats.worst_elem = stats.worst_elem.max(d);
                }
                let same = a.to_bits() == g.to_bits() || (a.is_nan() && g.is_nan());
                let close = libm && d <= 1e-5;
                if !(same || close) {
                    bad += 1;
                    first.get_or_insert((i, *a, *g));
                }
            }
            stats.elements += x.len;
            stats.written += x.body().iter().zip(&c.before[bi]).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            if let Some((i, a, g)) = first {
                stats.fail(format!(
                    "{what}: call {ci} {shape:?} (aligned {aligned}), buffer {b:?} ({} elements): {bad} differ; \
                     first at {i}: cpu {a:e} gpu {g:e}{}",
                    x.len,
                    if g == SENTINEL {
                        " (never written by the GPU)"
                    } else if a == SENTINEL {
                        " (never written by the CPU)"
                    } else {
                        ""
                    }
                ));
            }
        }
        for (ri, r) in abi.reductions.iter().enumerate() {
            let (a, g) = (cpu_full[ci][ri], gpu_full[ci][ri]);
            let d = rel_diff(a, g);
            if d.is_finite() {
                stats.worst_red = stats.worst_red.max(d);
            }
            stats.reductions += 1;
            if d > 1e-9 {
                stats.fail(format!(
                    "{what}: call {ci} {shape:?} (aligned {aligned}), reduction {r}: cpu {a:e} gpu {g:e}"
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test.

/// Which kernels of an example run: all of them or, for hundreds of kernels, the first and
/// last 5, every 40th, and the first of each shape of kernel (mode, domain, numbers of
/// buffers, scalars, reductions, axis reductions, instructions and outputs).
fn sampled(plan: &Plan) -> BTreeSet<String> {
    let mut all = Vec::new();
    for (vi, (vp, vm)) in plan.variants.iter().zip(&plan.module.variants).enumerate() {
        for (init, fp, func) in [(true, &vp.init, &vm.init), (false, &vp.update, &vm.update)] {
            for (ii, item) in fp.items.iter().enumerate() {
                if let Item::Kernel(k) = item {
                    let abi = gdc_compiler::cpu::abi::layout(func, k).unwrap();
                    let shape = format!(
                        "{:?} {:?} {} {} {} {} {} {}",
                        abi.mode,
                        k.domain,
                        abi.buffers.len(),
                        abi.scalars.len(),
                        abi.reductions.len(),
                        abi.axis_reductions.len(),
                        k.body.len(),
                        k.outputs.len()
                    );
                    all.push((gabi::kernel_name(vi, init, ii), shape));
                }
            }
        }
    }
    let n = all.len();
    let mut seen = BTreeSet::new();
    let mut keep = BTreeSet::new();
    for (i, (name, shape)) in all.into_iter().enumerate() {
        if seen.insert(shape) || n <= 100 || i < 5 || i + 5 >= n || i % 40 == 0 {
            keep.insert(name);
        }
    }
    keep
}

/// Runs every (sampled) kernel of the example at `path` on both backends; `mutate` may
/// change the host module's text first (the tests that check this test can fail).
fn run_example(path: &std::path::Path, rng: &mut Rng, mutate: &dyn Fn(String) -> String) -> (String, Stats) {
    let name = path.file_stem().unwrap().to_string_lossy().to_string();
    let source = gdc_dsl::policy::load(path).unwrap();
    let c = gdc_compiler::compile(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
    let plan: &Plan = &c.plan;
    let text = mlir::module_text(plan).unwrap_or_else(|e| panic!("{name}: {e}"));
    let all = gabi::plan_kernels(plan).unwrap();
    // Kernels of identical code share one function of the module: each kernel's function.
    let function_of: HashMap<String, String> =
        all.iter().map(|(m, _)| (gabi::kernel_name(m.variant, m.init, m.item), m.name.clone())).collect();
    let keep = sampled(plan);
    let functions: BTreeSet<String> = keep.iter().map(|k| function_of[k].clone()).collect();
    let (host, in_module) = host_module(&text, &functions);
    assert_eq!(in_module.len(), functions.len(), "{name}: every sampled kernel's function is in the module");
    let jit = Jit::new(&mutate(host));
    let cpu = gdc_compiler::cpu::compile(plan).unwrap_or_else(|e| panic!("{name}: CPU backend: {e}"));
    // Calls per variant: every shape that binds to it.
    let mut by_variant: Vec<Vec<BoundParam>> = vec![Vec::new(); plan.variants.len()];
    // Every role, so that a policy's routes each bind some shapes.
    let roles = gdc_compiler::ir::Role::ALL;
    for (shape, role) in SHAPES.iter().flat_map(|s| roles.iter().map(move |r| (s, *r))) {
        let info = [interp::ParamInfo { role, base_shape: None, shard: None }];
        let Ok(bp) = interp::bind_with(plan, &[("p".to_string(), shape.to_vec())], &info) else { continue };
        let bp = bp.into_iter().next().unwrap();
        if by_variant[bp.variant].iter().any(|q| q.shape == bp.shape) {
            continue;
        }
        let (vp, vm) = (&plan.variants[bp.variant], &plan.module.variants[bp.variant]);
        let largest = [(&vp.init, &vm.init), (&vp.update, &vm.update)]
            .into_iter()
            .flat_map(|(fp, func)| fp.items.iter().map(move |item| (item, func)))
            .filter_map(|(item, func)| match item {
                Item::Kernel(k) => Some((k, func)),
                Item::Lib(_) => None,
            })
            .map(|(k, func)| {
                let abi = gdc_compiler::cpu::abi::layout(func, k).unwrap();
                let bufs = buffer_lens(func, k, &abi, &bp).into_iter().map(|(n, _, _)| n).max().unwrap_or(0);
                bufs.max(interp::elements_of(&k.domain, &bp))
            })
            .max()
            .unwrap_or(0);
        if largest <= MAX_ELEMENTS {
            by_variant[bp.variant].push(bp);
        }
    }
    let mut stats = Stats { kernels: all.len(), ..Stats::default() };
    for (vi, (vp, vm)) in plan.variants.iter().zip(&plan.module.variants).enumerate() {
        let params = &by_variant[vi];
        assert!(params.len() >= 3, "{name}: variant {vi} binds only {} test shapes", params.len());
        for (init, fp, func) in [(true, &vp.init, &vm.init), (false, &vp.update, &vm.update)] {
            for (ii, item) in fp.items.iter().enumerate() {
                let Item::Kernel(k) = item else { continue };
                let kname = gabi::kernel_name(vi, init, ii);
                if !keep.contains(&kname) {
                    continue;
                }
                let compiled = if init { &cpu.variants[vi].0[ii] } else { &cpu.variants[vi].1[ii] };
                let ck = compiled.as_ref().unwrap_or_else(|| panic!("{name}: {kname} has no CPU code"));
                let abi = &ck.abi;
                let mut calls = make_calls(func, k, abi, params, rng);
                let cpu_full = run_cpu(ck.entry, func, k, abi, &mut calls);
                let (gpu_full, chunks) = run_gpu(jit.kernel(&function_of[&kname]), func, k, abi, &mut calls);
                let what = format!("{name} {kname} ({:?}, domain {:?})", abi.mode, k.domain);
                let written = stats.written;
                compare(&mut stats, &what, func, k, abi, &calls, &cpu_full, &gpu_full);
                assert!(
                    stats.written > written || k.outputs.is_empty(),
                    "{what}: the kernel changed no element of any call: the test data misses it"
                );
                stats.launches += 1;
                stats.grid += (abi.mode == Mode::Grid) as usize;
                stats.calls += calls.len();
                stats.chunks += chunks;
            }
        }
    }
    assert_eq!(stats.launches, keep.len(), "{name}: every sampled kernel ran");
    (name, stats)
}

#[test]
fn generated_gpu_kernels_match_the_cpu_backend_when_emulated() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gd"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 15, "the example library");
    let filter = std::env::var("GDC_EMU_ONLY").ok();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut failures = Vec::new();
    let mut launches = 0;
    for path in &paths {
        if filter.as_deref().is_some_and(|f| !path.to_string_lossy().contains(f)) {
            continue;
        }
        let t0 = Instant::now();
        let (name, s) = run_example(path, &mut rng, &|t| t);
        println!(
            "{name:>20}: {:>3} of {:>3} kernels ({} grid), {} calls, {} chunks, {} elements ({} written) and {} reductions compared, \
             worst relative error {:.1e} (elements) {:.1e} (reductions), {:.1}s",
            s.launches,
            s.kernels,
            s.grid,
            s.calls,
            s.chunks,
            s.elements,
            s.written,
            s.reductions,
            s.worst_elem,
            s.worst_red,
            t0.elapsed().as_secs_f64()
        );
        launches += s.launches;
        failures.extend(s.failures);
    }
    assert!(filter.is_some() || launches >= 80, "every example's kernels ran ({launches} launches)");
    assert!(failures.is_empty(), "{} disagreement(s):\n{}", failures.len(), failures.join("\n"));
}

/// `max(x)`/`min(x)`, whole and along both axes (tests/programs/extrema.gd): the kernels'
/// accumulators and column partials start at -infinity, and the block trees and chunk
/// combination take maxima, on the GPU as on the CPU.
#[test]
fn extrema_reductions_match_the_cpu_backend_when_emulated() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/extrema.gd");
    let (_, s) = run_example(&path, &mut Rng(11), &|t| t);
    assert!(s.launches >= 6 && s.grid >= 2 && s.reductions > 0, "{} launches, {} grid", s.launches, s.grid);
    assert!(s.failures.is_empty(), "{} disagreement(s):\n{}", s.failures.len(), s.failures.join("\n"));
}

#[test]
fn the_host_rewrite_keeps_only_what_it_is_asked_for() {
    let c = gdc_compiler::compile(&std::fs::read_to_string("../examples/optimizers/adafactor.gd").unwrap()).unwrap();
    let text = mlir::module_text(&c.plan).unwrap();
    // The module's functions in order (kernels of identical code share one).
    let mut names: Vec<String> = gabi::plan_kernels(&c.plan).unwrap().into_iter().map(|(m, _)| m.name).collect();
    names.dedup();
    let keep: BTreeSet<String> = names.iter().take(2).cloned().collect();
    let (host, kept) = host_module(&text, &keep);
    assert_eq!(kept, names[..2].to_vec());
    assert!(!host.contains("gpu.") && !host.contains("ptr<"), "{host}");
    assert_eq!(host.matches("func.func @").count(), 2);
}

/// Replaces the `nth` line (from the end when negative) of `text` that contains `pattern`
/// (a substring) by `f` of it.
fn mutate_line(text: &str, pattern: &str, nth: isize, f: &dyn Fn(&str) -> String) -> String {
    let hits: Vec<usize> = text.lines().enumerate().filter(|(_, l)| l.contains(pattern)).map(|(i, _)| i).collect();
    assert!(!hits.is_empty(), "no line contains {pattern}");
    let at = if nth < 0 { hits[hits.len() - nth.unsigned_abs()] } else { hits[nth as usize] };
    text.lines().enumerate().map(|(i, l)| if i == at { f(l) } else { l.to_string() } + "\n").collect()
}

fn failures_of(example: &str, mutate: &dyn Fn(String) -> String) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers").join(example);
    run_example(&path, &mut Rng(7), mutate).1.failures
}

/// The comparison sees a wrong kernel: a wrong operation in the vector path fails the
/// aligned calls only, one in the scalar path the unaligned ones, a wrong step of a block's
/// reduction tree fails the reductions, and lost column partials of a grid kernel fail the
/// axis reduction's output.
#[test]
fn a_wrong_kernel_is_caught() {
    // Adam's update: its first division is in the vector loop, its last in the scalar one.
    let vector = failures_of("adam.gd", &|t| mutate_line(&t, "arith.divf", 0, &|l| l.replace("divf", "mulf")));
    assert!(!vector.is_empty() && vector.iter().all(|f| f.contains("aligned true")), "{vector:#?}");
    let scalar = failures_of("adam.gd", &|t| mutate_line(&t, "arith.divf", -1, &|l| l.replace("divf", "mulf")));
    assert!(scalar.iter().any(|f| f.contains("aligned false")), "{scalar:#?}");
    // LAMB's norms: the tree's first step subtracts instead of adding.
    let tree = failures_of("lamb.gd", &|t| {
        let first = t
            .lines()
            .find(|l| l.contains("= arith.addf %t") && l.ends_with(" : f64") && !l.contains("_a"))
            .expect("a tree step")
            .to_string();
        mutate_line(&t, &first, 0, &|l| l.replace("arith.addf", "arith.subf"))
    });
    assert!(tree.iter().any(|f| f.contains("reduction")), "{tree:#?}");
    // Adafactor's column statistics: a grid chunk's column partials forget earlier rows.
    let columns = failures_of("adafactor.gd", &|t| {
        mutate_line(&t, "{alignment = 8 : i64} : !llvm.ptr -> f64", 0, &|l| {
            format!("{}= arith.constant 0.0 : f64", &l[..l.find('=').unwrap()])
        })
    });
    assert!(columns.iter().any(|f| f.contains("Grid") && f.contains(" differ")), "{columns:#?}");
}
