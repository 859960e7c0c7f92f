//! Emits a plan's kernels as one `gpu.module` in MLIR's text form: `arith` and `math` for
//! the arithmetic, `scf` for loops, `gpu` for thread indices and barriers, and the `llvm`
//! dialect for raw memory (the tables and buffers of [`abi`](super::abi)). The text is the
//! snapshot format (`gdc emit --stage mlir`) and what [`ptx`](super::ptx) parses and lowers.
//!
//! Each kernel strides over its chunks (block `b` takes chunks `b, b + gridDim, ...`). A
//! flat chunk is a loop of 16-byte loads and stores (four elements per thread per
//! iteration, computed lane by lane) when the call's buffers are aligned, then a scalar
//! loop for the rest. A grid chunk walks its rows, the block's threads striding over the
//! columns. Reductions accumulate in float64 per thread and are combined by a fixed tree in
//! shared memory, so they are deterministic.
//!
//! Arithmetic is IEEE float32 as on the CPU: `sqrt` is `sqrt.rn`, division `div.rn`,
//! `min`/`max` propagate NaN; `exp`, `log`, `cos`, `pow` and `%` are libdevice's (linked at
//! lowering, so the PTX calls nothing external). Booleans are 0.0 and 1.0.

use super::abi::{kernel_name, layout, size_index, KernelAbi, Mode, BLOCK, CHUNK_STRIDE, SIZES_STRIDE};
use crate::interp::names_of as names;
use crate::ir::{Binary, Func, Op, ReduceKind, Unary, Value};
use crate::plan::{Item, Kernel, Plan};
use gdc_dsl::types::Shape;
use std::collections::HashMap;
use std::fmt::Write;

/// The MLIR module holding every kernel of `plan`: one function per distinct kernel (see
/// [`kernel_functions`]).
pub fn module_text(plan: &Plan) -> Result<String, String> {
    Ok(module_of(&kernel_functions(plan)?.1))
}

/// The MLIR module holding these kernel functions (`kernel_functions`'s texts).
pub fn module_of(functions: &[String]) -> String {
    let mut out = String::new();
    out.push_str("module attributes {gpu.container_module} {\n  gpu.module @gdc {\n");
    let _ =
        writeln!(out, "    llvm.mlir.global internal @gdc_red() {{addr_space = 3 : i32}} : !llvm.array<{BLOCK} x f64>");
    for text in functions {
        out.push_str(text);
    }
    out.push_str("  }\n}\n");
    out
}

/// The name a kernel's function is built under before [`kernel_functions`] names it.
const UNNAMED: &str = "gdc_kernel";

/// For every kernel item of `plan`, in (variant, init then update, item) order, the name of
/// the function that runs it; and the text of each distinct function. A kernel reads its
/// buffers and scalars through its launch's tables, so kernels whose functions are the same
/// text share the first one's function ([`kernel_name`] of its item): Muon's unrolled
/// Newton–Schulz iterations are 600 kernels and 10 functions, and PTX is made for those.
pub fn kernel_functions(plan: &Plan) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut names, mut texts) = (Vec::new(), Vec::new());
    let mut by_body: HashMap<String, String> = HashMap::new();
    for (vi, (vp, vm)) in plan.variants.iter().zip(&plan.module.variants).enumerate() {
        for (init, fp, func) in [(true, &vp.init, &vm.init), (false, &vp.update, &vm.update)] {
            for (ii, item) in fp.items.iter().enumerate() {
                if let Item::Kernel(k) = item {
                    let abi = layout(func, k)?;
                    let name = kernel_name(vi, init, ii);
                    let body = kernel_text(func, k, &abi, UNNAMED).map_err(|e| format!("kernel {name}: {e}"))?;
                    if let Some(first) = by_body.get(&body) {
                        names.push(first.clone());
                        continue;
                    }
                    texts.push(body.replacen(&format!("@{UNNAMED}("), &format!("@{name}("), 1));
                    by_body.insert(body, name.clone());
                    names.push(name);
                }
            }
        }
    }
    Ok((names, texts))
}

/// An SSA name of the text being built.
type Ssa = String;

/// Text of one function, with fresh SSA names and indentation.
struct Emitter {
    out: String,
    next: usize,
    depth: usize,
    /// Constants to materialise in the entry block (`value : type`), in first-use order; the
    /// i-th is `%c{i}`.
    consts: Vec<String>,
}

impl Emitter {
    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Emits `%tN = <rhs>` and returns `%tN`.
    fn def(&mut self, rhs: &str) -> Ssa {
        let name = format!("%t{}", self.next);
        self.next += 1;
        self.line(&format!("{name} = {rhs}"));
        name
    }

    /// A constant (`value : ty`), emitted once at the function's top.
    fn konst(&mut self, value: &str, ty: &str) -> Ssa {
        let key = format!("{value} : {ty}");
        let i = match self.consts.iter().position(|c| *c == key) {
            Some(i) => i,
            None => {
                self.consts.push(key);
                self.consts.len() - 1
            }
        };
        format!("%c{i}")
    }

    /// A float32 constant, by its bits (exact, and how MLIR prints NaN and infinities).
    fn f32c(&mut self, x: f32) -> Ssa {
        self.konst(&format!("0x{:08X}", x.to_bits()), "f32")
    }

    /// What a `kind` reduction's float64 accumulator starts from (its bits, as MLIR takes a
    /// float constant exactly).
    fn f64_identity(&mut self, kind: ReduceKind) -> Ssa {
        self.konst(&format!("0x{:016X}", kind.identity().to_bits()), "f64")
    }

    fn i64c(&mut self, x: i64) -> Ssa {
        self.konst(&x.to_string(), "i64")
    }

    fn idxc(&mut self, x: i64) -> Ssa {
        self.konst(&x.to_string(), "index")
    }

    fn i64op(&mut self, op: &str, a: &str, b: &str) -> Ssa {
        self.def(&format!("arith.{op} {a}, {b} : i64"))
    }

    fn index_of(&mut self, a: &str) -> Ssa {
        self.def(&format!("arith.index_cast {a} : i64 to index"))
    }

    fn i64_of(&mut self, a: &str) -> Ssa {
        self.def(&format!("arith.index_cast {a} : index to i64"))
    }

    /// `base[index]` for elements of type `elem` in address space 1.
    fn gep(&mut self, base: &str, index: &str, elem: &str) -> Ssa {
        self.def(&format!("llvm.getelementptr {base}[{index}] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, {elem}"))
    }

    fn load(&mut self, ptr: &str, ty: &str, align: u32) -> Ssa {
        self.def(&format!("llvm.load {ptr} {{alignment = {align} : i64}} : !llvm.ptr<1> -> {ty}"))
    }

    fn store(&mut self, value: &str, ptr: &str, ty: &str, align: u32) {
        self.line(&format!("llvm.store {value}, {ptr} {{alignment = {align} : i64}} : {ty}, !llvm.ptr<1>"));
    }

    /// `table[row * stride + col]` of a table of `elem`s.
    fn table(&mut self, table: &str, row: &str, stride: usize, col: usize, elem: &str, align: u32) -> Ssa {
        let s = self.i64c(stride as i64);
        let base = self.i64op("muli", row, &s);
        let c = self.i64c(col as i64);
        let at = self.i64op("addi", &base, &c);
        let p = self.gep(table, &at, elem);
        self.load(&p, elem, align)
    }

    /// 1.0 where the i1 `cond` holds, else 0.0.
    fn bool_of(&mut self, cond: &str) -> Ssa {
        let one = self.f32c(1.0);
        let zero = self.f32c(0.0);
        self.def(&format!("arith.select {cond}, {one}, {zero} : f32"))
    }

    /// The i1 truth of a float32 boolean (non-zero, NaN included, is true).
    fn truth(&mut self, x: &str) -> Ssa {
        let zero = self.f32c(0.0);
        self.def(&format!("arith.cmpf une, {x}, {zero} : f32"))
    }

    fn unary(&mut self, u: Unary, x: &str) -> Ssa {
        match u {
            Unary::Neg => self.def(&format!("arith.negf {x} : f32")),
            Unary::Not => {
                let zero = self.f32c(0.0);
                let c = self.def(&format!("arith.cmpf oeq, {x}, {zero} : f32"));
                self.bool_of(&c)
            }
            Unary::Sqrt => self.sqrt(x),
            Unary::Rsqrt => {
                let s = self.sqrt(x);
                let one = self.f32c(1.0);
                self.def(&format!("arith.divf {one}, {s} : f32"))
            }
            Unary::Exp => self.def(&format!("math.exp {x} : f32")),
            Unary::Log => self.def(&format!("math.log {x} : f32")),
            Unary::Cos => self.def(&format!("math.cos {x} : f32")),
            Unary::Abs => self.def(&format!("llvm.call_intrinsic \"llvm.fabs.f32\"({x}) : (f32) -> f32")),
            Unary::Sign => {
                let zero = self.f32c(0.0);
                let one = self.f32c(1.0);
                let minus = self.f32c(-1.0);
                let gt = self.def(&format!("arith.cmpf ogt, {x}, {zero} : f32"));
                let lt = self.def(&format!("arith.cmpf olt, {x}, {zero} : f32"));
                let neg_or_x = self.def(&format!("arith.select {lt}, {minus}, {x} : f32"));
                self.def(&format!("arith.select {gt}, {one}, {neg_or_x} : f32"))
            }
        }
    }

    /// IEEE square root, round to nearest (libdevice's `sqrtf` would pick the approximate
    /// instruction unless its reflect flags ask otherwise).
    fn sqrt(&mut self, x: &str) -> Ssa {
        self.def(&format!("llvm.call_intrinsic \"llvm.nvvm.sqrt.rn.f\"({x}) : (f32) -> f32"))
    }

    fn binary(&mut self, op: Binary, x: &str, y: &str) -> Ssa {
        let arith = |e: &mut Emitter, name: &str| e.def(&format!("arith.{name} {x}, {y} : f32"));
        let cmp = |e: &mut Emitter, pred: &str| {
            let c = e.def(&format!("arith.cmpf {pred}, {x}, {y} : f32"));
            e.bool_of(&c)
        };
        match op {
            Binary::Add => arith(self, "addf"),
            Binary::Sub => arith(self, "subf"),
            Binary::Mul => arith(self, "mulf"),
            Binary::Div => arith(self, "divf"),
            Binary::Rem => arith(self, "remf"),
            Binary::Pow => self.def(&format!("math.powf {x}, {y} : f32")),
            Binary::Min => arith(self, "minimumf"),
            Binary::Max => arith(self, "maximumf"),
            Binary::Eq => cmp(self, "oeq"),
            Binary::Ne => cmp(self, "une"),
            Binary::Lt => cmp(self, "olt"),
            Binary::Le => cmp(self, "ole"),
            Binary::Gt => cmp(self, "ogt"),
            Binary::Ge => cmp(self, "oge"),
            Binary::And | Binary::Or => {
                let a = self.truth(x);
                let b = self.truth(y);
                let m = self.def(&format!("arith.{} {a}, {b} : i1", if op == Binary::And { "andi" } else { "ori" }));
                self.bool_of(&m)
            }
        }
    }

    /// Folds float32 `x` into the float64 accumulator `acc`.
    fn accumulate(&mut self, kind: ReduceKind, acc: &str, x: &str) -> Ssa {
        match kind {
            ReduceKind::Sum => {
                let w = self.def(&format!("arith.extf {x} : f32 to f64"));
                self.def(&format!("arith.addf {acc}, {w} : f64"))
            }
            ReduceKind::MaxAbs => {
                let a = self.unary(Unary::Abs, x);
                let w = self.def(&format!("arith.extf {a} : f32 to f64"));
                self.def(&format!("arith.maximumf {acc}, {w} : f64"))
            }
            ReduceKind::Max => {
                let w = self.def(&format!("arith.extf {x} : f32 to f64"));
                self.def(&format!("arith.maximumf {acc}, {w} : f64"))
            }
        }
    }

    /// Combines `acc` over the block by a fixed tree in shared memory; thread 0 stores the
    /// result at `partials[at]`. Every thread of the block must reach it.
    fn block_reduce(&mut self, kind: ReduceKind, acc: &str, tid: &str, partials: &str, at: &str) {
        let sh = self.def("llvm.mlir.addressof @gdc_red : !llvm.ptr<3>");
        let mine = self.def(&format!("llvm.getelementptr {sh}[{tid}] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f64"));
        self.line(&format!("llvm.store {acc}, {mine} : f64, !llvm.ptr<3>"));
        self.line("gpu.barrier");
        let mut s = BLOCK as i64 / 2;
        while s >= 1 {
            let sc = self.i64c(s);
            let active = self.def(&format!("arith.cmpi ult, {tid}, {sc} : i64"));
            self.line(&format!("scf.if {active} {{"));
            self.depth += 1;
            let other_i = self.i64op("addi", tid, &sc);
            let other =
                self.def(&format!("llvm.getelementptr {sh}[{other_i}] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, f64"));
            let a = self.def(&format!("llvm.load {mine} : !llvm.ptr<3> -> f64"));
            let b = self.def(&format!("llvm.load {other} : !llvm.ptr<3> -> f64"));
            let r = match kind {
                ReduceKind::Sum => self.def(&format!("arith.addf {a}, {b} : f64")),
                ReduceKind::MaxAbs | ReduceKind::Max => self.def(&format!("arith.maximumf {a}, {b} : f64")),
            };
            self.line(&format!("llvm.store {r}, {mine} : f64, !llvm.ptr<3>"));
            self.depth -= 1;
            self.line("}");
            self.line("gpu.barrier");
            s /= 2;
        }
        let zero = self.i64c(0);
        let first = self.def(&format!("arith.cmpi eq, {tid}, {zero} : i64"));
        self.line(&format!("scf.if {first} {{"));
        self.depth += 1;
        let r = self.def(&format!("llvm.load {mine} : !llvm.ptr<3> -> f64"));
        let p = self.gep(partials, at, "f64");
        self.store(&r, &p, "f64", 8);
        self.depth -= 1;
        self.line("}");
        // Nobody reuses the shared array before thread 0 has read it.
        self.line("gpu.barrier");
    }
}

/// What every loop body of one kernel shares: values fixed for the chunk.
struct Chunk {
    /// Buffer base pointers, by position in the ABI's buffer table.
    bufs: Vec<Ssa>,
    /// Uniform values (scalars from the table, scalar inputs), by IR value.
    uniform: HashMap<Value, Ssa>,
    /// Per output: the i1 guard, if any.
    out_guards: Vec<Option<Ssa>>,
    /// numel, rows, cols of the call's parameter.
    sizes: [Ssa; 3],
}

/// Computes the body for one element, given its loaded inputs (and `eye`, for grids).
fn body(e: &mut Emitter, cx: &Chunk, func: &Func, k: &Kernel, mut env: HashMap<Value, Ssa>) -> HashMap<Value, Ssa> {
    for v in &k.body {
        if env.contains_key(v) {
            continue;
        }
        let inst = func.inst(*v);
        let get = |env: &HashMap<Value, Ssa>, a: &Value| env.get(a).or_else(|| cx.uniform.get(a)).cloned();
        let args: Option<Vec<Ssa>> = inst.args.iter().map(|a| get(&env, a)).collect();
        let Some(a) = args else { continue };
        let out = match &inst.op {
            Op::Broadcast => a[0].clone(),
            Op::Unary(u) => e.unary(*u, &a[0]),
            Op::Binary(b) => e.binary(*b, &a[0], &a[1]),
            Op::Select => {
                let c = e.truth(&a[0]);
                e.def(&format!("arith.select {c}, {}, {} : f32", a[1], a[2]))
            }
            // Reductions, stores and `eye` are handled by the caller.
            _ => continue,
        };
        env.insert(*v, out);
    }
    env
}

/// The value of `v` for this element: computed, loaded or uniform.
fn value(env: &HashMap<Value, Ssa>, cx: &Chunk, v: Value) -> Result<Ssa, String> {
    env.get(&v)
        .or_else(|| cx.uniform.get(&v))
        .cloned()
        .ok_or_else(|| format!("value {v} is not available in its kernel"))
}

/// Folds this element's operands of the full reductions into `accs`.
fn fold_full(
    e: &mut Emitter,
    cx: &Chunk,
    func: &Func,
    abi: &KernelAbi,
    env: &HashMap<Value, Ssa>,
    accs: &mut [Ssa],
) -> Result<(), String> {
    for (ri, r) in abi.reductions.iter().enumerate() {
        let x = value(env, cx, func.inst(*r).args[0])?;
        accs[ri] = e.accumulate(ReduceKind::of(func, *r), &accs[ri], &x);
    }
    Ok(())
}

/// Combines each full reduction over the block into the chunk's slots at `poff`.
fn store_full(e: &mut Emitter, func: &Func, abi: &KernelAbi, accs: &[Ssa], tid: &str, poff: &str) {
    for (ri, (r, acc)) in abi.reductions.iter().zip(accs).enumerate() {
        let rc = e.i64c(ri as i64);
        let at = e.i64op("addi", poff, &rc);
        e.block_reduce(ReduceKind::of(func, *r), acc, tid, "%partials", &at);
    }
}

/// Writes `x` to `ptr` under the output's guard.
fn guarded_store(e: &mut Emitter, guard: &Option<Ssa>, x: &str, ptr: &str, ty: &str, align: u32) {
    match guard {
        None => e.store(x, ptr, ty, align),
        Some(g) => {
            e.line(&format!("scf.if {g} {{"));
            e.depth += 1;
            e.store(x, ptr, ty, align);
            e.depth -= 1;
            e.line("}");
        }
    }
}

/// One kernel: signature, chunk loop and its body. The block size ([`BLOCK`]) is not
/// declared to the assembler (`known_block_size` becomes `.maxntid`, with which ptxas caps
/// registers at 40 and spilled in Muon's kernels on sm_80); the runtime launches `BLOCK`.
fn kernel_text(func: &Func, k: &Kernel, abi: &KernelAbi, name: &str) -> Result<String, String> {
    let mut e = Emitter { out: String::new(), next: 0, depth: 3, consts: Vec::new() };
    kernel_body(&mut e, func, k, abi)?;
    let mut text = format!(
        "    gpu.func @{name}(%ptrs: !llvm.ptr<1>, %scalars: !llvm.ptr<1>, %sizes: !llvm.ptr<1>, \
         %chunks: !llvm.ptr<1>, %nchunks: i64, %partials: !llvm.ptr<1>) kernel {{\n"
    );
    for (i, value) in e.consts.iter().enumerate() {
        let _ = writeln!(text, "      %c{i} = arith.constant {value}");
    }
    text.push_str(&e.out);
    text.push_str("      gpu.return\n    }\n");
    Ok(text)
}

fn kernel_body(e: &mut Emitter, func: &Func, k: &Kernel, abi: &KernelAbi) -> Result<(), String> {
    let bid = e.def("gpu.block_id x");
    let nb = e.def("gpu.grid_dim x");
    let tidx = e.def("gpu.thread_id x");
    let tid = e.i64_of(&tidx);
    let nchunks = e.index_of("%nchunks");
    e.line(&format!("scf.for %chunk = {bid} to {nchunks} step {nb} {{"));
    e.depth += 1;
    let c = e.i64_of("%chunk");
    let call = e.table("%chunks", &c, CHUNK_STRIDE, 0, "i64", 8);
    let start = e.table("%chunks", &c, CHUNK_STRIDE, 1, "i64", 8);
    let end = e.table("%chunks", &c, CHUNK_STRIDE, 2, "i64", 8);
    let poff = e.table("%chunks", &c, CHUNK_STRIDE, 3, "i64", 8);
    let mut bufs = Vec::new();
    for i in 0..abi.buffers.len() {
        let s = e.i64c(abi.buffers.len() as i64);
        let base = e.i64op("muli", &call, &s);
        let ic = e.i64c(i as i64);
        let at = e.i64op("addi", &base, &ic);
        let p = e.def(&format!("llvm.getelementptr %ptrs[{at}] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, !llvm.ptr<1>"));
        bufs.push(e.def(&format!("llvm.load {p} {{alignment = 8 : i64}} : !llvm.ptr<1> -> !llvm.ptr<1>")));
    }
    let sizes = [0, 1, 2].map(|i| e.table("%sizes", &call, SIZES_STRIDE, i, "i64", 8));
    let aligned = e.table("%sizes", &call, SIZES_STRIDE, 3, "i64", 8);
    let mut uniform = HashMap::new();
    let stride = abi.scalars.len().max(1);
    for (i, v) in abi.scalars.iter().enumerate() {
        let x = e.table("%scalars", &call, stride, i, "f32", 4);
        uniform.insert(*v, x);
    }
    let domain = names(&k.domain);
    for (v, buf) in &k.inputs {
        if func.ty(*v).is_scalar() && !domain.is_empty() {
            let slot = abi.buffers.iter().position(|x| x == buf).unwrap_or(0);
            let x = e.load(&bufs[slot], "f32", 4);
            uniform.insert(*v, x);
        }
    }
    let mut out_guards = Vec::new();
    for o in &k.outputs {
        out_guards.push(match o.guard {
            Some(g) => {
                let x = uniform.get(&g).cloned().ok_or_else(|| format!("guard {g} is not a scalar of the kernel"))?;
                Some(e.truth(&x))
            }
            None => None,
        });
    }
    let cx = Chunk { bufs, uniform, out_guards, sizes };
    match abi.mode {
        Mode::Flat => flat(e, &cx, func, k, abi, &tid, [&start, &end, &poff], &aligned)?,
        Mode::Grid => grid(e, &cx, func, k, abi, &tid, [&start, &end, &poff])?,
    }
    e.depth -= 1;
    e.line("}");
    Ok(())
}

/// Zero-valued float64 accumulators, one per full reduction.
/// Accumulators at the identities of reductions of `kinds`.
fn identity_accs(e: &mut Emitter, kinds: &[ReduceKind]) -> Vec<Ssa> {
    kinds.iter().map(|k| e.f64_identity(*k)).collect()
}

/// A loop body: given the induction variable and the accumulators, the new accumulators.
type LoopBody<'a> = dyn FnMut(&mut Emitter, &str, &[Ssa]) -> Result<Vec<Ssa>, String> + 'a;

/// `scf.for %iv = lo to hi step st iter_args(...)` over `accs`; `inner` computes the new
/// accumulators. Returns the loop's results (the accumulators after it).
fn for_loop(
    e: &mut Emitter,
    (lo, hi, st): (&str, &str, &str),
    accs: &[Ssa],
    inner: &mut LoopBody,
) -> Result<Vec<Ssa>, String> {
    let iv = format!("%i{}", e.next);
    e.next += 1;
    let args: Vec<Ssa> = (0..accs.len()).map(|i| format!("{iv}_a{i}")).collect();
    let results: Vec<Ssa> = if accs.is_empty() {
        vec![]
    } else {
        let r = format!("%r{}", e.next);
        e.next += 1;
        (0..accs.len()).map(|i| format!("{r}#{i}")).collect()
    };
    let head = if accs.is_empty() {
        format!("scf.for {iv} = {lo} to {hi} step {st} {{")
    } else {
        let init: Vec<String> = args.iter().zip(accs).map(|(a, x)| format!("{a} = {x}")).collect();
        let tys = vec!["f64"; accs.len()].join(", ");
        let r = results[0].split('#').next().unwrap_or_default().to_string();
        format!(
            "{r}:{} = scf.for {iv} = {lo} to {hi} step {st} iter_args({}) -> ({tys}) {{",
            accs.len(),
            init.join(", ")
        )
    };
    e.line(&head);
    e.depth += 1;
    let new = inner(e, &iv, &args)?;
    if !new.is_empty() {
        let tys = vec!["f64"; new.len()].join(", ");
        e.line(&format!("scf.yield {} : {tys}", new.join(", ")));
    }
    e.depth -= 1;
    e.line("}");
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn flat(
    e: &mut Emitter,
    cx: &Chunk,
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    tid: &str,
    [start, end, poff]: [&String; 3],
    aligned: &str,
) -> Result<(), String> {
    let domain_is_scalar = k.domain == Shape::Scalar;
    let elem_inputs: Vec<(Value, usize)> = k
        .inputs
        .iter()
        .filter(|(v, _)| !func.ty(*v).is_scalar() || domain_is_scalar)
        .map(|(v, b)| (*v, abi.buffers.iter().position(|x| x == b).unwrap_or(0)))
        .collect();
    let outputs: Vec<(usize, Value, usize)> = k
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| !abi.axis_reductions.iter().any(|(r, _)| *r == o.value))
        .map(|(oi, o)| (oi, o.value, abi.buffers.iter().position(|b| *b == o.buffer).unwrap_or(0)))
        .collect();
    // Vector part: [start, vend) in steps of 4 when aligned, else empty.
    let zero = e.i64c(0);
    let four = e.i64c(4);
    let len = e.i64op("subi", end, start);
    let nvec_all = e.i64op("divui", &len, &four);
    let is_aligned = e.def(&format!("arith.cmpi ne, {aligned}, {zero} : i64"));
    let nvec = e.def(&format!("arith.select {is_aligned}, {nvec_all}, {zero} : i64"));
    let kinds: Vec<ReduceKind> = abi.reductions.iter().map(|r| ReduceKind::of(func, *r)).collect();
    let accs = identity_accs(e, &kinds);
    let lo = e.index_of(tid);
    let hi = e.index_of(&nvec);
    let st = e.idxc(BLOCK as i64);
    let accs = for_loop(e, (&lo, &hi, &st), &accs, &mut |e, j, accs| {
        let j = e.i64_of(j);
        let j4 = e.i64op("muli", &j, &four);
        let i = e.i64op("addi", start, &j4);
        let mut lanes: Vec<HashMap<Value, Ssa>> = vec![HashMap::new(); 4];
        for (v, slot) in &elem_inputs {
            let p = e.gep(&cx.bufs[*slot], &i, "f32");
            let x = e.load(&p, "vector<4xf32>", 16);
            for (lane, env) in lanes.iter_mut().enumerate() {
                let l = e.i64c(lane as i64);
                env.insert(*v, e.def(&format!("llvm.extractelement {x}[{l} : i64] : vector<4xf32>")));
            }
        }
        let lanes: Vec<_> = lanes.into_iter().map(|env| body(e, cx, func, k, env)).collect();
        let mut accs = accs.to_vec();
        for env in &lanes {
            fold_full(e, cx, func, abi, env, &mut accs)?;
        }
        for (oi, v, slot) in &outputs {
            let mut vec = e.def("llvm.mlir.undef : vector<4xf32>");
            for (lane, env) in lanes.iter().enumerate() {
                let x = value(env, cx, *v)?;
                let l = e.i64c(lane as i64);
                vec = e.def(&format!("llvm.insertelement {x}, {vec}[{l} : i64] : vector<4xf32>"));
            }
            let p = e.gep(&cx.bufs[*slot], &i, "f32");
            guarded_store(e, &cx.out_guards[*oi], &vec, &p, "vector<4xf32>", 16);
        }
        Ok(accs)
    })?;
    // Scalar part: [vend, end), one element per thread per iteration.
    let done = e.i64op("muli", &nvec, &four);
    let vend = e.i64op("addi", start, &done);
    let first = e.i64op("addi", &vend, tid);
    let lo = e.index_of(&first);
    let hi = e.index_of(end);
    let accs = for_loop(e, (&lo, &hi, &st), &accs, &mut |e, i, accs| {
        let i = e.i64_of(i);
        let mut env = HashMap::new();
        for (v, slot) in &elem_inputs {
            let p = e.gep(&cx.bufs[*slot], &i, "f32");
            env.insert(*v, e.load(&p, "f32", 4));
        }
        let env = body(e, cx, func, k, env);
        let mut accs = accs.to_vec();
        fold_full(e, cx, func, abi, &env, &mut accs)?;
        for (oi, v, slot) in &outputs {
            let x = value(&env, cx, *v)?;
            let p = e.gep(&cx.bufs[*slot], &i, "f32");
            guarded_store(e, &cx.out_guards[*oi], &x, &p, "f32", 4);
        }
        Ok(accs)
    })?;
    store_full(e, func, abi, &accs, tid, poff);
    Ok(())
}

/// The flat index into a broadcast operand with dimension names `vn` at grid position
/// (r, c): each of its dimensions takes the index of the first domain dimension of the same
/// name (the interpreter's rule).
fn index_in(e: &mut Emitter, cx: &Chunk, vn: &[String], domain: &[String], r: &str, c: &str) -> Ssa {
    let mut off = e.i64c(0);
    for name in vn {
        let pos = domain.iter().position(|d| d == name).unwrap_or(0);
        let idx = if pos == 0 { r } else { c };
        let size = cx.sizes[size_index(name)].clone();
        let scaled = e.i64op("muli", &off, &size);
        off = e.i64op("addi", &scaled, idx);
    }
    off
}

fn grid(
    e: &mut Emitter,
    cx: &Chunk,
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    tid: &str,
    [r0, r1, poff]: [&String; 3],
) -> Result<(), String> {
    let domain = names(&k.domain);
    let cols_n = cx.sizes[size_index(&domain[1])].clone();
    let nfull = abi.reductions.len();
    let axis_kinds: Vec<ReduceKind> = abi.axis_reductions.iter().map(|(r, _)| ReduceKind::of(func, *r)).collect();
    // Partials layout of this chunk: full reductions, then per axis reduction its slots.
    let nrows = e.i64op("subi", r1, r0);
    let mut slot_base = Vec::new();
    let nfull_c = e.i64c(nfull as i64);
    let mut at = e.i64op("addi", poff, &nfull_c);
    for (_, by_rows) in &abi.axis_reductions {
        slot_base.push(at.clone());
        at = e.i64op("addi", &at, if *by_rows { &nrows } else { &cols_n });
    }
    let st = e.idxc(BLOCK as i64);
    let one = e.idxc(1);
    // Column partials start at their identity; thread t owns columns t, t + BLOCK, ...
    for (ai, (red, by_rows)) in abi.axis_reductions.iter().enumerate() {
        if *by_rows {
            continue;
        }
        let identity = e.f64_identity(ReduceKind::of(func, *red));
        let lo = e.index_of(tid);
        let hi = e.index_of(&cols_n);
        let base = slot_base[ai].clone();
        for_loop(e, (&lo, &hi, &st), &[], &mut |e, c, _| {
            let c = e.i64_of(c);
            let at = e.i64op("addi", &base, &c);
            let p = e.gep("%partials", &at, "f64");
            e.store(&identity, &p, "f64", 8);
            Ok(vec![])
        })?;
    }
    let elem_inputs: Vec<(Value, usize, Vec<String>)> = k
        .inputs
        .iter()
        .filter(|(v, _)| !func.ty(*v).is_scalar())
        .map(|(v, b)| (*v, abi.buffers.iter().position(|x| x == b).unwrap_or(0), names(&func.ty(*v).shape)))
        .collect();
    let row_axes: Vec<usize> = (0..abi.axis_reductions.len()).filter(|a| abi.axis_reductions[*a].1).collect();
    let full_kinds: Vec<ReduceKind> = abi.reductions.iter().map(|r| ReduceKind::of(func, *r)).collect();
    let full = identity_accs(e, &full_kinds);
    let lo = e.index_of(r0);
    let hi = e.index_of(r1);
    let full = for_loop(e, (&lo, &hi, &one), &full, &mut |e, r, full| {
        let r = e.i64_of(r);
        let rowflat = e.i64op("muli", &r, &cols_n);
        // Loop-carried: the full reductions, then this row's column-wise reductions.
        let mut accs = full.to_vec();
        accs.extend(identity_accs(e, &row_axes.iter().map(|a| axis_kinds[*a]).collect::<Vec<_>>()));
        let lo = e.index_of(tid);
        let hi = e.index_of(&cols_n);
        let accs = for_loop(e, (&lo, &hi, &st), &accs, &mut |e, c, accs| {
            let c = e.i64_of(c);
            let flat = e.i64op("addi", &rowflat, &c);
            let mut env = HashMap::new();
            for (v, slot, vn) in &elem_inputs {
                let idx = if *vn == domain { flat.clone() } else { index_in(e, cx, vn, &domain, &r, &c) };
                let p = e.gep(&cx.bufs[*slot], &idx, "f32");
                env.insert(*v, e.load(&p, "f32", 4));
            }
            for v in &k.body {
                if func.inst(*v).op == Op::Eye {
                    let m = e.def(&format!("arith.cmpi eq, {r}, {c} : i64"));
                    env.insert(*v, e.bool_of(&m));
                }
            }
            let env = body(e, cx, func, k, env);
            let mut accs = accs.to_vec();
            fold_full(e, cx, func, abi, &env, &mut accs)?;
            for (ai, (red, by_rows)) in abi.axis_reductions.iter().enumerate() {
                let x = value(&env, cx, func.inst(*red).args[0])?;
                if *by_rows {
                    let slot = nfull + row_axes.iter().position(|a| *a == ai).unwrap_or(0);
                    accs[slot] = e.accumulate(axis_kinds[ai], &accs[slot], &x);
                } else {
                    let at = e.i64op("addi", &slot_base[ai], &c);
                    let p = e.gep("%partials", &at, "f64");
                    let old = e.load(&p, "f64", 8);
                    let new = e.accumulate(axis_kinds[ai], &old, &x);
                    e.store(&new, &p, "f64", 8);
                }
            }
            for (oi, o) in k.outputs.iter().enumerate() {
                if abi.axis_reductions.iter().any(|(r, _)| *r == o.value) {
                    continue;
                }
                let x = value(&env, cx, o.value)?;
                let slot = abi.buffers.iter().position(|b| *b == o.buffer).unwrap_or(0);
                let p = e.gep(&cx.bufs[slot], &flat, "f32");
                guarded_store(e, &cx.out_guards[oi], &x, &p, "f32", 4);
            }
            Ok(accs)
        })?;
        // This row's column-wise reductions are complete once the block combines them.
        let local = e.i64op("subi", &r, r0);
        for (n, ai) in row_axes.iter().enumerate() {
            let at = e.i64op("addi", &slot_base[*ai], &local);
            e.block_reduce(axis_kinds[*ai], &accs[nfull + n], tid, "%partials", &at);
        }
        Ok(accs[..nfull].to_vec())
    })?;
    store_full(e, func, abi, &full, tid, poff);
    Ok(())
}
