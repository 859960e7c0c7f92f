//! Kernel to MLIR for the CPU's LLVM tier: the flat kernels of a plan as `func.func`s in
//! MLIR's text form (`arith`, `math` and `vector` on `vector<Nxf32>`, `scf` loops, the `llvm`
//! dialect for raw memory), one set per x86-64 feature level ([`Level`]), each function
//! carrying its level as its target CPU and features. [`super::llvm`] compiles the text to
//! an object file at `gdc build`; [`super::native`] loads it where the CPU has the features.
//!
//! A function has exactly the Cranelift kernel's signature and results, bit for bit: every
//! operation is the same IEEE float32 operation (no fast-math flags, so LLVM neither
//! contracts into FMA nor reassociates; `sqrt` and division exact; `min`/`max` propagate NaN
//! as Cranelift's do), loop versions on the same uniform conditions
//! ([`super::clif::versioned_conditions`]), and sums accumulate in the same order: float64
//! lanes 0-3 take the float32 elements `4j + lane` in order over the part of the range that
//! is a multiple of eight (at the level's width, then eight at a time for the rest), are
//! folded `(l0 + l2) + (l1 + l3)`, and the scalar tail is added after, one element at a time.
//! Kernels that call a helper (`exp`, `log`, `cos`, `pow`, `%`) and grid kernels stay on
//! Cranelift ([`supported`]).

use super::abi::{KernelAbi, Mode};
use super::clif::{live_values, versioned_conditions};
use crate::ir::{Binary, Func, Op, ReduceKind, Unary, Value};
use crate::plan::{Item, Kernel, Plan};
use gdc_dsl::types::Shape;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

pub use super::native::Level;

/// Whether the LLVM tier compiles kernel `k`: a flat kernel that calls no helper.
pub fn supported(func: &Func, k: &Kernel, abi: &KernelAbi) -> bool {
    abi.mode == Mode::Flat
        && k.body.iter().all(|v| {
            !matches!(
                func.inst(*v).op,
                Op::Unary(Unary::Exp | Unary::Log | Unary::Cos) | Op::Binary(Binary::Pow | Binary::Rem)
            )
        })
}

/// An SSA name of the text being built.
type Ssa = String;

/// The type of a value in a loop body: `lanes` float32 elements (1: a scalar).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Ty {
    lanes: usize,
}

impl Ty {
    const SCALAR: Ty = Ty { lanes: 1 };

    fn of(&self, elem: &str) -> String {
        if self.lanes == 1 {
            elem.to_string()
        } else {
            format!("vector<{}x{elem}>", self.lanes)
        }
    }

    fn f32(&self) -> String {
        self.of("f32")
    }
}

/// Text of one function, with fresh SSA names and indentation.
struct Emitter {
    out: String,
    next: usize,
    depth: usize,
    /// Constants and their splats, emitted at the function's top in first-use order; the
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

    /// A value defined once at the function's top (`rhs` reads only earlier such values).
    fn top(&mut self, rhs: String) -> Ssa {
        let i = match self.consts.iter().position(|c| *c == rhs) {
            Some(i) => i,
            None => {
                self.consts.push(rhs);
                self.consts.len() - 1
            }
        };
        format!("%c{i}")
    }

    fn i64c(&mut self, x: i64) -> Ssa {
        self.top(format!("arith.constant {x} : i64"))
    }

    /// An integer constant of `ty` (`i32`, `vector<8xi32>`, ...), splatted for a vector.
    fn int_const(&mut self, x: i64, elem: &str, t: Ty) -> Ssa {
        let s = self.top(format!("arith.constant {x} : {elem}"));
        self.splat_top(&s, elem, t)
    }

    /// A float32 constant, by its bits, splatted for a vector.
    fn fconst(&mut self, t: Ty, x: f32) -> Ssa {
        let s = self.top(format!("arith.constant 0x{:08X} : f32", x.to_bits()));
        self.splat_top(&s, "f32", t)
    }

    fn splat_top(&mut self, s: &str, elem: &str, t: Ty) -> Ssa {
        if t.lanes == 1 {
            s.to_string()
        } else {
            self.top(format!("vector.broadcast {s} : {elem} to {}", t.of(elem)))
        }
    }

    fn index_of(&mut self, a: &str) -> Ssa {
        self.def(&format!("arith.index_cast {a} : i64 to index"))
    }

    fn gep(&mut self, base: &str, index: &str, elem: &str) -> Ssa {
        self.def(&format!("llvm.getelementptr {base}[{index}] : (!llvm.ptr, i64) -> !llvm.ptr, {elem}"))
    }

    fn load(&mut self, ptr: &str, ty: &str, align: u32) -> Ssa {
        self.def(&format!("llvm.load {ptr} {{alignment = {align} : i64}} : !llvm.ptr -> {ty}"))
    }

    fn store(&mut self, value: &str, ptr: &str, ty: &str, align: u32) {
        self.line(&format!("llvm.store {value}, {ptr} {{alignment = {align} : i64}} : {ty}, !llvm.ptr"));
    }

    fn select(&mut self, t: Ty, cond: &str, cond_is_vector: bool, a: &str, b: &str) -> Ssa {
        if cond_is_vector && t.lanes > 1 {
            self.def(&format!("arith.select {cond}, {a}, {b} : {}, {}", t.of("i1"), t.f32()))
        } else {
            self.def(&format!("arith.select {cond}, {a}, {b} : {}", t.f32()))
        }
    }

    /// 1.0 where the mask holds, else 0.0.
    fn bool_of(&mut self, t: Ty, mask: &str) -> Ssa {
        let one = self.fconst(t, 1.0);
        let zero = self.fconst(t, 0.0);
        self.select(t, mask, true, &one, &zero)
    }

    fn cmp(&mut self, t: Ty, pred: &str, x: &str, y: &str) -> Ssa {
        self.def(&format!("arith.cmpf {pred}, {x}, {y} : {}", t.f32()))
    }

    /// The truth of a float32 boolean (non-zero, NaN included, is true).
    fn truth(&mut self, t: Ty, x: &str) -> Ssa {
        let zero = self.fconst(t, 0.0);
        self.cmp(t, "une", x, &zero)
    }

    fn unary(&mut self, t: Ty, u: Unary, x: &str) -> Ssa {
        let ty = t.f32();
        match u {
            Unary::Neg => self.def(&format!("arith.negf {x} : {ty}")),
            Unary::Not => {
                let zero = self.fconst(t, 0.0);
                let c = self.cmp(t, "oeq", x, &zero);
                self.bool_of(t, &c)
            }
            Unary::Sqrt => self.def(&format!("math.sqrt {x} : {ty}")),
            Unary::Rsqrt => {
                let s = self.def(&format!("math.sqrt {x} : {ty}"));
                let one = self.fconst(t, 1.0);
                self.def(&format!("arith.divf {one}, {s} : {ty}"))
            }
            Unary::Abs => self.def(&format!("math.absf {x} : {ty}")),
            Unary::Sign => {
                let zero = self.fconst(t, 0.0);
                let one = self.fconst(t, 1.0);
                let minus = self.fconst(t, -1.0);
                let gt = self.cmp(t, "ogt", x, &zero);
                let lt = self.cmp(t, "olt", x, &zero);
                let neg_or_x = self.select(t, &lt, true, &minus, x);
                self.select(t, &gt, true, &one, &neg_or_x)
            }
            // `supported` keeps kernels that call helpers on Cranelift.
            Unary::Exp | Unary::Log | Unary::Cos => unreachable!("helper calls are not compiled by the LLVM tier"),
        }
    }

    fn binary(&mut self, t: Ty, op: Binary, x: &str, y: &str) -> Ssa {
        let ty = t.f32();
        let arith = |e: &mut Emitter, name: &str| e.def(&format!("arith.{name} {x}, {y} : {ty}"));
        let cmp = |e: &mut Emitter, pred: &str| {
            let c = e.cmp(t, pred, x, y);
            e.bool_of(t, &c)
        };
        match op {
            Binary::Add => arith(self, "addf"),
            Binary::Sub => arith(self, "subf"),
            Binary::Mul => arith(self, "mulf"),
            Binary::Div => arith(self, "divf"),
            Binary::Min => arith(self, "minimumf"),
            Binary::Max => arith(self, "maximumf"),
            Binary::Eq => cmp(self, "oeq"),
            Binary::Ne => cmp(self, "une"),
            Binary::Lt => cmp(self, "olt"),
            Binary::Le => cmp(self, "ole"),
            Binary::Gt => cmp(self, "ogt"),
            Binary::Ge => cmp(self, "oge"),
            Binary::And | Binary::Or => {
                let a = self.truth(t, x);
                let b = self.truth(t, y);
                let name = if op == Binary::And { "andi" } else { "ori" };
                let m = self.def(&format!("arith.{name} {a}, {b} : {}", t.of("i1")));
                self.bool_of(t, &m)
            }
            Binary::Pow | Binary::Rem => unreachable!("helper calls are not compiled by the LLVM tier"),
        }
    }

    /// Loads `t` elements at element `i` of a float32 buffer, or of a bf16 one (2 bytes an
    /// element, widened).
    fn load_elems(&mut self, t: Ty, base: &str, i: &str, bf16: bool) -> Ssa {
        if !bf16 {
            let p = self.gep(base, i, "f32");
            return self.load(&p, &t.f32(), 4);
        }
        let p = self.gep(base, i, "i16");
        let h = self.load(&p, &t.of("i16"), 2);
        let w = self.def(&format!("arith.extui {h} : {} to {}", t.of("i16"), t.of("i32")));
        let sixteen = self.int_const(16, "i32", t);
        let s = self.def(&format!("arith.shli {w}, {sixteen} : {}", t.of("i32")));
        self.def(&format!("arith.bitcast {s} : {} to {}", t.of("i32"), t.f32()))
    }

    /// Stores `x` as [`Emitter::load_elems`] loads; into bf16, rounded to nearest even (a NaN
    /// becomes the quiet NaN 0x7FC0), as the Cranelift kernels round.
    fn store_elems(&mut self, t: Ty, x: &str, base: &str, i: &str, bf16: bool) {
        if !bf16 {
            let p = self.gep(base, i, "f32");
            self.store(x, &p, &t.f32(), 4);
            return;
        }
        let i32t = t.of("i32");
        let bits = self.def(&format!("arith.bitcast {x} : {} to {i32t}", t.f32()));
        let sixteen = self.int_const(16, "i32", t);
        let one = self.int_const(1, "i32", t);
        let bias = self.int_const(0x7FFF, "i32", t);
        let qnan = self.int_const(0x7FC0, "i32", t);
        let hi = self.def(&format!("arith.shrui {bits}, {sixteen} : {i32t}"));
        let lsb = self.def(&format!("arith.andi {hi}, {one} : {i32t}"));
        let r = self.def(&format!("arith.addi {bits}, {bias} : {i32t}"));
        let r = self.def(&format!("arith.addi {r}, {lsb} : {i32t}"));
        let r = self.def(&format!("arith.shrui {r}, {sixteen} : {i32t}"));
        let nan = self.cmp(t, "uno", x, x);
        let r = if t.lanes == 1 {
            self.def(&format!("arith.select {nan}, {qnan}, {r} : i32"))
        } else {
            self.def(&format!("arith.select {nan}, {qnan}, {r} : {}, {i32t}", t.of("i1")))
        };
        let h = self.def(&format!("arith.trunci {r} : {i32t} to {}", t.of("i16")));
        let p = self.gep(base, i, "i16");
        self.store(&h, &p, &t.of("i16"), 2);
    }
}

/// A reduction's accumulator in the vector loops: a sum in four float64 lanes, a maximum
/// (of magnitudes or of values) in four float32 lanes.
fn acc_type(kind: ReduceKind) -> &'static str {
    match kind {
        ReduceKind::Sum => "vector<4xf64>",
        ReduceKind::MaxAbs | ReduceKind::Max => "vector<4xf32>",
    }
}

/// What every loop body of one kernel shares.
struct Cx<'a> {
    func: &'a Func,
    k: &'a Kernel,
    abi: &'a KernelAbi,
    bufs: Vec<Ssa>,
    /// Uniform values by IR value: by lanes (1 for the scalar), defined in the entry block.
    uniform: HashMap<Value, HashMap<usize, Ssa>>,
    /// Per output: the i1 guard, if any.
    out_guards: Vec<Option<Ssa>>,
    /// Uniform select conditions as i1, by IR value.
    masks: HashMap<Value, Ssa>,
    known: HashMap<Value, bool>,
    live: Option<HashSet<Value>>,
    /// Inputs read per element, with their buffer slots.
    elem_inputs: Vec<(Value, usize)>,
    /// Outputs written per element: (output index, value, slot).
    outputs: Vec<(usize, Value, usize)>,
    reductions: Vec<(Value, ReduceKind)>,
}

impl Cx<'_> {
    fn get(&self, env: &HashMap<Value, Ssa>, v: Value, t: Ty) -> Ssa {
        if let Some(x) = env.get(&v) {
            return x.clone();
        }
        self.uniform[&v][&t.lanes].clone()
    }
}

/// Computes one iteration's body at type `t`, given the loaded inputs.
fn body(e: &mut Emitter, cx: &Cx, t: Ty, mut env: HashMap<Value, Ssa>) -> HashMap<Value, Ssa> {
    for v in &cx.k.body {
        if cx.uniform.contains_key(v) || cx.live.as_ref().is_some_and(|l| !l.contains(v)) {
            continue;
        }
        let inst = cx.func.inst(*v);
        if inst.op == Op::Select {
            if let Some(c) = cx.known.get(&inst.args[0]) {
                let picked = cx.get(&env, if *c { inst.args[1] } else { inst.args[2] }, t);
                env.insert(*v, picked);
                continue;
            }
        }
        let a: Vec<Ssa> = inst.args.iter().map(|x| cx.get(&env, *x, t)).collect();
        let out = match &inst.op {
            Op::Broadcast => a[0].clone(),
            Op::Unary(u) => e.unary(t, *u, &a[0]),
            Op::Binary(b) => e.binary(t, *b, &a[0], &a[1]),
            Op::Select => match cx.masks.get(&inst.args[0]) {
                Some(m) => e.select(t, m, false, &a[1], &a[2]),
                None => {
                    let m = e.truth(t, &a[0]);
                    e.select(t, &m, true, &a[1], &a[2])
                }
            },
            _ => continue,
        };
        env.insert(*v, out);
    }
    env
}

/// Loads, computes and stores `t` elements at element `i`; returns the environment.
fn iteration(e: &mut Emitter, cx: &Cx, t: Ty, i: &str) -> HashMap<Value, Ssa> {
    let mut env = HashMap::new();
    for (v, slot) in &cx.elem_inputs {
        if cx.live.as_ref().is_some_and(|l| !l.contains(v)) {
            continue;
        }
        let x = e.load_elems(t, &cx.bufs[*slot], i, cx.abi.bf16[*slot]);
        env.insert(*v, x);
    }
    let env = body(e, cx, t, env);
    for (oi, v, slot) in &cx.outputs {
        let known = cx.k.outputs[*oi].guard.and_then(|g| cx.known.get(&g).copied());
        if known == Some(false) {
            continue;
        }
        let x = cx.get(&env, *v, t);
        match (&cx.out_guards[*oi], known) {
            (Some(g), None) => {
                e.line(&format!("scf.if {g} {{"));
                e.depth += 1;
                e.store_elems(t, &x, &cx.bufs[*slot], i, cx.abi.bf16[*slot]);
                e.depth -= 1;
                e.line("}");
            }
            _ => e.store_elems(t, &x, &cx.bufs[*slot], i, cx.abi.bf16[*slot]),
        }
    }
    env
}

/// A loop body: given the element index and the accumulators, the new accumulators.
type LoopBody<'a> = dyn FnMut(&mut Emitter, &str, &[Ssa]) -> Vec<Ssa> + 'a;

/// `scf.for` over element indices `lo..hi` (i64) by `step`, threading `accs` (of `tys`);
/// `inner(e, i, accs)` emits one iteration and returns the new accumulators.
fn for_loop(
    e: &mut Emitter,
    (lo, hi, step): (&str, &str, i64),
    accs: &[(Ssa, String)],
    inner: &mut LoopBody,
) -> Vec<Ssa> {
    let lo = e.index_of(lo);
    let hi = e.index_of(hi);
    let st = e.top(format!("arith.constant {step} : index"));
    let iv = format!("%i{}", e.next);
    e.next += 1;
    let args: Vec<Ssa> = (0..accs.len()).map(|j| format!("{iv}_a{j}")).collect();
    let tys: Vec<&str> = accs.iter().map(|(_, t)| t.as_str()).collect();
    let r = format!("%r{}", e.next);
    e.next += 1;
    if accs.is_empty() {
        e.line(&format!("scf.for {iv} = {lo} to {hi} step {st} {{"));
    } else {
        let init: Vec<String> = args.iter().zip(accs).map(|(a, (x, _))| format!("{a} = {x}")).collect();
        e.line(&format!(
            "{r}:{} = scf.for {iv} = {lo} to {hi} step {st} iter_args({}) -> ({}) {{",
            accs.len(),
            init.join(", "),
            tys.join(", ")
        ));
    }
    e.depth += 1;
    let i = e.def(&format!("arith.index_cast {iv} : index to i64"));
    let new = inner(e, &i, &args);
    if !new.is_empty() {
        e.line(&format!("scf.yield {} : {}", new.join(", "), tys.join(", ")));
    }
    e.depth -= 1;
    e.line("}");
    (0..accs.len()).map(|j| format!("{r}#{j}")).collect()
}

/// Folds the `t`-wide float32 value `x` into a vector accumulator, four lanes at a time.
fn accumulate_vector(e: &mut Emitter, kind: ReduceKind, acc: &str, x: &str, t: Ty) -> Ssa {
    let mut acc = acc.to_string();
    for q in 0..t.lanes / 4 {
        let block = if t.lanes == 4 {
            x.to_string()
        } else {
            let idx: Vec<String> = (4 * q..4 * q + 4).map(|l| l.to_string()).collect();
            e.def(&format!("llvm.shufflevector {x}, {x} [{}] : {}", idx.join(", "), t.f32()))
        };
        acc = match kind {
            ReduceKind::Sum => {
                let w = e.def(&format!("arith.extf {block} : vector<4xf32> to vector<4xf64>"));
                e.def(&format!("arith.addf {acc}, {w} : vector<4xf64>"))
            }
            ReduceKind::MaxAbs => {
                let a = e.def(&format!("math.absf {block} : vector<4xf32>"));
                e.def(&format!("arith.maximumf {acc}, {a} : vector<4xf32>"))
            }
            ReduceKind::Max => e.def(&format!("arith.maximumf {acc}, {block} : vector<4xf32>")),
        };
    }
    acc
}

/// A vector accumulator folded to one float64, as the Cranelift kernels fold theirs.
fn fold_lanes(e: &mut Emitter, kind: ReduceKind, acc: &str) -> Ssa {
    let lane = |e: &mut Emitter, ty: &str, l: i64| {
        let c = e.i64c(l);
        e.def(&format!("llvm.extractelement {acc}[{c} : i64] : {ty}"))
    };
    match kind {
        ReduceKind::Sum => {
            let l: Vec<Ssa> = (0..4).map(|j| lane(e, "vector<4xf64>", j)).collect();
            let s0 = e.def(&format!("arith.addf {}, {} : f64", l[0], l[2]));
            let s1 = e.def(&format!("arith.addf {}, {} : f64", l[1], l[3]));
            e.def(&format!("arith.addf {s0}, {s1} : f64"))
        }
        ReduceKind::MaxAbs | ReduceKind::Max => {
            let mut m = lane(e, "vector<4xf32>", 0);
            for j in 1..4 {
                let x = lane(e, "vector<4xf32>", j);
                m = e.def(&format!("arith.maximumf {m}, {x} : f32"));
            }
            e.def(&format!("arith.extf {m} : f32 to f64"))
        }
    }
}

/// One loop version: the vector loops, the scalar tail, the partials.
fn version(e: &mut Emitter, cx: &Cx, lanes: usize) {
    let zero_sum = e.top("arith.constant dense<0.0> : vector<4xf64>".to_string());
    let zero_max = e.top("arith.constant dense<0.0> : vector<4xf32>".to_string());
    let minus_inf = e.top("arith.constant dense<0xFF800000> : vector<4xf32>".to_string());
    let mut accs: Vec<(Ssa, String)> = cx
        .reductions
        .iter()
        .map(|(_, kind)| {
            let z = match kind {
                ReduceKind::Sum => zero_sum.clone(),
                ReduceKind::MaxAbs => zero_max.clone(),
                ReduceKind::Max => minus_inf.clone(),
            };
            (z, acc_type(*kind).to_string())
        })
        .collect();
    // [start, start + (end - start) rounded down to 8): `lanes` at a time, then 8 at a time.
    let mut at = "%start".to_string();
    let mut widths = vec![lanes];
    if lanes > 8 {
        widths.push(8);
    }
    for w in widths {
        let mask = e.i64c(!(w as i64 - 1));
        let rest = e.def(&format!("arith.subi %end, {at} : i64"));
        let n = e.def(&format!("arith.andi {rest}, {mask} : i64"));
        let hi = e.def(&format!("arith.addi {at}, {n} : i64"));
        let t = Ty { lanes: w };
        let new = for_loop(e, (&at, &hi, w as i64), &accs, &mut |e, i, a| {
            let env = iteration(e, cx, t, i);
            cx.reductions
                .iter()
                .zip(a)
                .map(|((r, kind), acc)| {
                    let x = cx.get(&env, cx.func.inst(*r).args[0], t);
                    accumulate_vector(e, *kind, acc, &x, t)
                })
                .collect()
        });
        for (acc, x) in accs.iter_mut().zip(new) {
            acc.0 = x;
        }
        at = hi;
    }
    let folded: Vec<(Ssa, String)> =
        cx.reductions.iter().zip(&accs).map(|((_, kind), (a, _))| (fold_lanes(e, *kind, a), "f64".into())).collect();
    let sums = for_loop(e, (&at, "%end", 1), &folded, &mut |e, i, a| {
        let env = iteration(e, cx, Ty::SCALAR, i);
        cx.reductions
            .iter()
            .zip(a)
            .map(|((r, kind), acc)| {
                let x = cx.get(&env, cx.func.inst(*r).args[0], Ty::SCALAR);
                match kind {
                    ReduceKind::Sum => {
                        let w = e.def(&format!("arith.extf {x} : f32 to f64"));
                        e.def(&format!("arith.addf {acc}, {w} : f64"))
                    }
                    ReduceKind::MaxAbs => {
                        let ax = e.def(&format!("math.absf {x} : f32"));
                        let w = e.def(&format!("arith.extf {ax} : f32 to f64"));
                        e.def(&format!("arith.maximumf {acc}, {w} : f64"))
                    }
                    ReduceKind::Max => {
                        let w = e.def(&format!("arith.extf {x} : f32 to f64"));
                        e.def(&format!("arith.maximumf {acc}, {w} : f64"))
                    }
                }
            })
            .collect()
    });
    for (ri, s) in sums.iter().enumerate() {
        let at = e.i64c(ri as i64);
        let p = e.gep("%partials", &at, "f64");
        e.store(s, &p, "f64", 8);
    }
}

/// The MLIR function of flat kernel `k` at `level`, named `name`; `None` where the LLVM tier
/// does not compile it ([`supported`]).
pub fn kernel_text(func: &Func, k: &Kernel, abi: &KernelAbi, level: Level, name: &str) -> Option<String> {
    if !supported(func, k, abi) {
        return None;
    }
    let mut e = Emitter { out: String::new(), next: 0, depth: 2, consts: Vec::new() };
    let lanes = level.lanes();
    let mut widths = vec![1, lanes];
    if lanes > 8 {
        widths.push(8);
    }
    let bufs: Vec<Ssa> = (0..abi.buffers.len())
        .map(|i| {
            let at = e.i64c(i as i64);
            let p = e.gep("%bufs", &at, "!llvm.ptr");
            e.load(&p, "!llvm.ptr", 8)
        })
        .collect();
    let mut scalar: HashMap<Value, Ssa> = HashMap::new();
    for (i, v) in abi.scalars.iter().enumerate() {
        // Each scalar is passed four times over (16 bytes): read the first.
        let at = e.i64c(4 * i as i64);
        let p = e.gep("%scalars", &at, "f32");
        scalar.insert(*v, e.load(&p, "f32", 4));
    }
    let domain_is_scalar = k.domain == Shape::Scalar;
    for (v, buf) in &k.inputs {
        if func.ty(*v).is_scalar() && !domain_is_scalar {
            let slot = abi.buffers.iter().position(|x| x == buf).unwrap_or(0);
            let x = e.load(&bufs[slot], "f32", 4);
            scalar.insert(*v, x);
        }
    }
    // Instructions whose arguments are all uniform: once, as scalars (as Cranelift hoists).
    for v in &k.body {
        let inst = func.inst(*v);
        if !matches!(inst.op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Broadcast)
            || !inst.args.iter().all(|a| scalar.contains_key(a))
        {
            continue;
        }
        let a: Vec<Ssa> = inst.args.iter().map(|x| scalar[x].clone()).collect();
        let s = match &inst.op {
            Op::Unary(u) => e.unary(Ty::SCALAR, *u, &a[0]),
            Op::Binary(b) => e.binary(Ty::SCALAR, *b, &a[0], &a[1]),
            Op::Select => {
                let m = e.truth(Ty::SCALAR, &a[0]);
                e.select(Ty::SCALAR, &m, false, &a[1], &a[2])
            }
            _ => a[0].clone(),
        };
        scalar.insert(*v, s);
    }
    let mut uniform: HashMap<Value, HashMap<usize, Ssa>> = HashMap::new();
    for (v, s) in &scalar {
        let mut by = HashMap::new();
        for w in &widths {
            let x = if *w == 1 { s.clone() } else { e.def(&format!("vector.broadcast {s} : f32 to vector<{w}xf32>")) };
            by.insert(*w, x);
        }
        uniform.insert(*v, by);
    }
    let mut masks = HashMap::new();
    for v in &k.body {
        let inst = func.inst(*v);
        if inst.op == Op::Select && scalar.contains_key(&inst.args[0]) && !masks.contains_key(&inst.args[0]) {
            let m = e.truth(Ty::SCALAR, &scalar[&inst.args[0]]);
            masks.insert(inst.args[0], m);
        }
    }
    let out_guards: Vec<Option<Ssa>> =
        k.outputs.iter().map(|o| o.guard.map(|g| e.truth(Ty::SCALAR, &scalar[&g]))).collect();
    let elem_inputs = k
        .inputs
        .iter()
        .filter(|(v, _)| !func.ty(*v).is_scalar() || domain_is_scalar)
        .map(|(v, b)| (*v, abi.buffers.iter().position(|x| x == b).unwrap_or(0)))
        .collect();
    let outputs = k
        .outputs
        .iter()
        .enumerate()
        .map(|(oi, o)| (oi, o.value, abi.buffers.iter().position(|b| *b == o.buffer).unwrap_or(0)))
        .collect();
    let reductions = abi.reductions.iter().map(|r| (*r, ReduceKind::of(func, *r))).collect();
    let conds = versioned_conditions(func, k, abi, &|v| scalar.contains_key(&v));
    let mut cx = Cx {
        func,
        k,
        abi,
        bufs,
        uniform,
        out_guards,
        masks,
        known: HashMap::new(),
        live: None,
        elem_inputs,
        outputs,
        reductions,
    };
    if conds.is_empty() {
        version(&mut e, &cx, lanes);
    } else {
        // One loop per combination of the uniform conditions, chosen once per call.
        let mut index = e.i64c(0);
        for (bit, c) in conds.iter().enumerate() {
            let m = e.truth(Ty::SCALAR, &scalar[c]);
            let x = e.def(&format!("arith.extui {m} : i1 to i64"));
            let sh = e.i64c(bit as i64);
            let x = e.def(&format!("arith.shli {x}, {sh} : i64"));
            index = e.def(&format!("arith.ori {index}, {x} : i64"));
        }
        let index = e.index_of(&index);
        let n = 1usize << conds.len();
        e.line(&format!("scf.index_switch {index}"));
        for case in 0..n {
            if case + 1 == n {
                e.line("default {");
            } else {
                e.line(&format!("case {case} {{"));
            }
            e.depth += 1;
            cx.known = conds.iter().enumerate().map(|(bit, c)| (*c, case >> bit & 1 == 1)).collect();
            cx.live = Some(live_values(func, k, abi, &cx.known));
            version(&mut e, &cx, lanes);
            e.line("scf.yield");
            e.depth -= 1;
            e.line("}");
        }
    }
    let mut text = format!(
        "  func.func @{name}(%bufs: !llvm.ptr, %scalars: !llvm.ptr, %sizes: !llvm.ptr, %start: i64, %end: i64, \
         %partials: !llvm.ptr) attributes {{target_cpu = \"{}\", target_features = #llvm.target_features<[{}]>}} {{\n",
        level.name(),
        level.features().iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ")
    );
    for (i, rhs) in e.consts.iter().enumerate() {
        let _ = writeln!(text, "    %c{i} = {rhs}");
    }
    text.push_str(&e.out);
    text.push_str("    return\n  }\n");
    Some(text)
}

/// The MLIR module of `plan`'s kernels at `level` and, per kernel item (in (variant, init
/// then update, item) order), the name of its function; kernels of identical text share one.
pub fn module_text(plan: &Plan, level: Level) -> Result<(String, Vec<Option<String>>), String> {
    let (mut texts, names) = module_texts(plan, &[level])?;
    Ok((texts.pop().unwrap_or_default(), names))
}

/// [`module_text`] for several levels at once: the kernels are told apart by their text at
/// the first level (kernels the same at one level are the same at every level: only the
/// vector width differs), and the other levels print only one kernel of each kind.
pub fn module_texts(plan: &Plan, levels: &[Level]) -> Result<(Vec<String>, Vec<Option<String>>), String> {
    let Some((&first_level, others)) = levels.split_first() else { return Ok((Vec::new(), Vec::new())) };
    let mut names = Vec::new();
    let mut by_body: HashMap<String, String> = HashMap::new();
    let mut texts = vec![String::from("module {\n"); levels.len()];
    let m = &plan.module;
    for (vi, (vp, vm)) in plan.variants.iter().zip(&m.variants).enumerate() {
        for (init, fp, func) in [(true, &vp.init, &vm.init), (false, &vp.update, &vm.update)] {
            for (ii, item) in fp.items.iter().enumerate() {
                let Item::Kernel(k) = item else { continue };
                let mut abi = super::abi::layout(func, k)?;
                super::abi::mark_bf16(&mut abi, m);
                let Some(body) = kernel_text(func, k, &abi, first_level, UNNAMED) else {
                    names.push(None);
                    continue;
                };
                if let Some(first) = by_body.get(&body) {
                    names.push(Some(first.clone()));
                    continue;
                }
                let name = format!("gdc_v{vi}_{}_{ii}", if init { "init" } else { "update" });
                let named = |text: &str| text.replacen(&format!("@{UNNAMED}("), &format!("@{name}("), 1);
                texts[0].push_str(&named(&body));
                for (text, level) in texts[1..].iter_mut().zip(others) {
                    text.push_str(&named(&kernel_text(func, k, &abi, *level, UNNAMED).unwrap_or_default()));
                }
                by_body.insert(body, name.clone());
                names.push(Some(name));
            }
        }
    }
    for text in &mut texts {
        text.push_str("}\n");
    }
    Ok((texts, names))
}

/// The name a kernel's function is printed under before [`module_texts`] names it.
const UNNAMED: &str = "gdc_kernel";
