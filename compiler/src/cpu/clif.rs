//! Kernel to Cranelift IR: one function per fused kernel. A flat kernel is a loop over
//! 128-bit lanes (four float32, unrolled twice) then a scalar tail; a grid kernel loops over
//! a band of rows and, per row, over 128-bit lanes of the columns (row vectors splatted,
//! column vectors loaded contiguously) then a scalar tail, filling axis reductions.
//! Uniform values are loaded and splatted once, before the loop. Arithmetic is float32,
//! IEEE-exact where Cranelift has the instruction (`sqrt`, `min`/`max` propagate NaN), and
//! `exp`, `log`, `pow` and `%` call the Rust standard library's float32 functions lane by
//! lane; sums accumulate in float64.

use super::abi::{size_index, KernelAbi, Mode};
use crate::interp::names_of as names;
use crate::ir::{Binary, Func, Op, ReduceKind, Unary, Value};
use crate::plan::Kernel;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, Endianness, InstBuilder, MemFlagsData, Signature, Type};
use cranelift_frontend::{FunctionBuilder, Variable};
use std::collections::HashMap;

/// Lanes per vector and vectors per loop iteration.
const LANES: i64 = 4;
const UNROLL: i64 = 2;

/// The `extern "C"` helpers kernels call, by symbol name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Helper {
    Exp,
    Log,
    Pow,
    Rem,
    Cos,
}

impl Helper {
    pub const ALL: [Helper; 5] = [Helper::Exp, Helper::Log, Helper::Pow, Helper::Rem, Helper::Cos];

    pub fn symbol(self) -> &'static str {
        match self {
            Helper::Exp => "gdc_expf",
            Helper::Log => "gdc_logf",
            Helper::Pow => "gdc_powf",
            Helper::Rem => "gdc_fmodf",
            Helper::Cos => "gdc_cosf",
        }
    }

    pub fn arity(self) -> usize {
        match self {
            Helper::Exp | Helper::Log | Helper::Cos => 1,
            Helper::Pow | Helper::Rem => 2,
        }
    }
}

/// The kernel signature: (bufs, scalars, sizes, start, end, partials).
pub fn signature(call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for t in [types::I64, types::I64, types::I64, types::I64, types::I64, types::I64] {
        sig.params.push(AbiParam::new(t));
    }
    sig
}

/// Resolves a helper to a callable reference inside the function being built.
pub type HelperRefs = HashMap<Helper, cranelift_codegen::ir::FuncRef>;

/// A value inside the loop: the same for every element, or one per element.
#[derive(Clone, Copy)]
enum Val {
    /// Scalar f32 and its splat.
    Uniform(cranelift_codegen::ir::Value, cranelift_codegen::ir::Value),
    Varying(cranelift_codegen::ir::Value),
}

struct Emitter<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    helpers: &'a HelperRefs,
    /// Constants made once in the entry block, by (bits, is_vector).
    consts: HashMap<(u32, bool), cranelift_codegen::ir::Value>,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Emitter<'_, '_> {
    /// Loads a float32 (`ty` F32) or four (F32X4) at element byte offset `byte + off` of
    /// `base` (offsets count float32 elements of 4 bytes); a bf16 buffer holds 2 bytes per
    /// element, widened here.
    fn load_elem(
        &mut self,
        ty: Type,
        base: cranelift_codegen::ir::Value,
        byte: cranelift_codegen::ir::Value,
        off: i32,
        bf16: bool,
    ) -> cranelift_codegen::ir::Value {
        if !bf16 {
            let addr = self.b.ins().iadd(base, byte);
            return self.b.ins().load(ty, flags(), addr, off);
        }
        let half = self.b.ins().ushr_imm_u(byte, 1);
        let addr = self.b.ins().iadd(base, half);
        if ty == types::F32 {
            let x = self.b.ins().uload16(types::I32, flags(), addr, off / 2);
            let x = self.b.ins().ishl_imm_u(x, 16);
            self.b.ins().bitcast(types::F32, MemFlagsData::new(), x)
        } else {
            let x = self.b.ins().uload16x4(flags(), addr, off / 2);
            let x = self.b.ins().ishl_imm_u(x, 16);
            self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), x)
        }
    }

    /// Stores `x` (F32 or F32X4) like [`Emitter::load_elem`] loads; into a bf16 buffer it
    /// rounds to nearest even (a NaN becomes the quiet NaN 0x7FC0).
    fn store_elem(
        &mut self,
        ty: Type,
        x: cranelift_codegen::ir::Value,
        base: cranelift_codegen::ir::Value,
        byte: cranelift_codegen::ir::Value,
        off: i32,
        bf16: bool,
    ) {
        if !bf16 {
            let addr = self.b.ins().iadd(base, byte);
            self.b.ins().store(flags(), x, addr, off);
            return;
        }
        let half = self.b.ins().ushr_imm_u(byte, 1);
        let addr = self.b.ins().iadd(base, half);
        let ity = if ty == types::F32 { types::I32 } else { types::I32X4 };
        let bits = self.b.ins().bitcast(ity, MemFlagsData::new(), x);
        let (bias, one, qnan) = if ty == types::F32 {
            (
                self.b.ins().iconst(types::I32, 0x7FFF),
                self.b.ins().iconst(types::I32, 1),
                self.b.ins().iconst(types::I32, 0x7FC0),
            )
        } else {
            let c = |e: &mut Self, v: i64| {
                let s = e.b.ins().iconst(types::I32, v);
                e.b.ins().splat(types::I32X4, s)
            };
            (c(self, 0x7FFF), c(self, 1), c(self, 0x7FC0))
        };
        let hi = self.b.ins().ushr_imm_u(bits, 16);
        let lsb = self.b.ins().band(hi, one);
        let r = self.b.ins().iadd(bits, bias);
        let r = self.b.ins().iadd(r, lsb);
        let r = self.b.ins().ushr_imm_u(r, 16);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        if ty == types::F32 {
            let r = self.b.ins().select(nan, qnan, r);
            self.b.ins().istore16(flags(), r, addr, off / 2);
        } else {
            let m = self.b.ins().bitcast(types::I32X4, MemFlagsData::new(), nan);
            let r = self.b.ins().bitselect(m, qnan, r);
            let packed = self.b.ins().unarrow(r, r);
            let le = MemFlagsData::new().with_endianness(Endianness::Little);
            let wide = self.b.ins().bitcast(types::I64X2, le, packed);
            let lo = self.b.ins().extractlane(wide, 0);
            self.b.ins().store(flags(), lo, addr, off / 2);
        }
    }

    fn fconst(&mut self, ty: Type, x: f32) -> cranelift_codegen::ir::Value {
        if let Some(v) = self.consts.get(&(x.to_bits(), ty != types::F32)) {
            return *v;
        }
        let s = self.b.ins().f32const(x);
        if ty == types::F32 {
            s
        } else {
            self.b.ins().splat(ty, s)
        }
    }

    /// 1.0 where `mask` holds, else 0.0 (`mask`: i8 for scalars, i32x4 for vectors).
    fn bool_of(&mut self, ty: Type, mask: cranelift_codegen::ir::Value) -> cranelift_codegen::ir::Value {
        let one = self.fconst(ty, 1.0);
        let zero = self.fconst(ty, 0.0);
        self.pick(ty, mask, one, zero)
    }

    fn pick(
        &mut self,
        ty: Type,
        mask: cranelift_codegen::ir::Value,
        a: cranelift_codegen::ir::Value,
        b: cranelift_codegen::ir::Value,
    ) -> cranelift_codegen::ir::Value {
        if ty == types::F32 {
            self.b.ins().select(mask, a, b)
        } else {
            let m = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), mask);
            self.b.ins().bitselect(m, a, b)
        }
    }

    fn truth(&mut self, ty: Type, x: cranelift_codegen::ir::Value) -> cranelift_codegen::ir::Value {
        let zero = self.fconst(ty, 0.0);
        self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
    }

    fn call(&mut self, ty: Type, h: Helper, args: &[cranelift_codegen::ir::Value]) -> cranelift_codegen::ir::Value {
        let f = self.helpers[&h];
        if ty == types::F32 {
            let call = self.b.ins().call(f, args);
            return self.b.inst_results(call)[0];
        }
        let mut out = self.fconst(ty, 0.0);
        for lane in 0..LANES as u8 {
            let lane_args: Vec<_> = args.iter().map(|a| self.b.ins().extractlane(*a, lane)).collect();
            let call = self.b.ins().call(f, &lane_args);
            let r = self.b.inst_results(call)[0];
            out = self.b.ins().insertlane(out, r, lane);
        }
        out
    }

    fn unary(&mut self, ty: Type, u: Unary, x: cranelift_codegen::ir::Value) -> cranelift_codegen::ir::Value {
        match u {
            Unary::Neg => self.b.ins().fneg(x),
            Unary::Not => {
                let zero = self.fconst(ty, 0.0);
                let m = self.b.ins().fcmp(FloatCC::Equal, x, zero);
                self.bool_of(ty, m)
            }
            Unary::Sqrt => self.b.ins().sqrt(x),
            Unary::Rsqrt => {
                let s = self.b.ins().sqrt(x);
                let one = self.fconst(ty, 1.0);
                self.b.ins().fdiv(one, s)
            }
            Unary::Exp => self.call(ty, Helper::Exp, &[x]),
            Unary::Log => self.call(ty, Helper::Log, &[x]),
            Unary::Cos => self.call(ty, Helper::Cos, &[x]),
            Unary::Abs => self.b.ins().fabs(x),
            Unary::Sign => {
                let zero = self.fconst(ty, 0.0);
                let one = self.fconst(ty, 1.0);
                let minus = self.fconst(ty, -1.0);
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                let neg_or_x = self.pick(ty, lt, minus, x);
                self.pick(ty, gt, one, neg_or_x)
            }
        }
    }

    fn binary(
        &mut self,
        ty: Type,
        op: Binary,
        x: cranelift_codegen::ir::Value,
        y: cranelift_codegen::ir::Value,
    ) -> cranelift_codegen::ir::Value {
        let cmp = |e: &mut Self, cc: FloatCC| {
            let m = e.b.ins().fcmp(cc, x, y);
            e.bool_of(ty, m)
        };
        match op {
            Binary::Add => self.b.ins().fadd(x, y),
            Binary::Sub => self.b.ins().fsub(x, y),
            Binary::Mul => self.b.ins().fmul(x, y),
            Binary::Div => self.b.ins().fdiv(x, y),
            Binary::Rem => self.call(ty, Helper::Rem, &[x, y]),
            Binary::Pow => self.call(ty, Helper::Pow, &[x, y]),
            Binary::Min => self.b.ins().fmin(x, y),
            Binary::Max => self.b.ins().fmax(x, y),
            Binary::Eq => cmp(self, FloatCC::Equal),
            Binary::Ne => cmp(self, FloatCC::NotEqual),
            Binary::Lt => cmp(self, FloatCC::LessThan),
            Binary::Le => cmp(self, FloatCC::LessThanOrEqual),
            Binary::Gt => cmp(self, FloatCC::GreaterThan),
            Binary::Ge => cmp(self, FloatCC::GreaterThanOrEqual),
            Binary::And | Binary::Or => {
                let a = self.truth(ty, x);
                let c = self.truth(ty, y);
                let m = if op == Binary::And { self.b.ins().band(a, c) } else { self.b.ins().bor(a, c) };
                self.bool_of(ty, m)
            }
        }
    }
}

/// Per-function state shared by the loop bodies.
struct Ctx {
    /// Buffer base pointers, by position in the ABI's buffer table.
    ptrs: Vec<cranelift_codegen::ir::Value>,
    /// Whether each buffer holds bfloat16 (2 bytes an element) rather than float32.
    bf16: Vec<bool>,
    /// Uniform values (scalar, splat) by IR value.
    uniform: HashMap<Value, (cranelift_codegen::ir::Value, cranelift_codegen::ir::Value)>,
    /// Per output: the i8 guard, if any.
    out_guards: Vec<Option<cranelift_codegen::ir::Value>>,
    /// sizes[0..3] = numel, rows, cols (i64).
    sizes: [cranelift_codegen::ir::Value; 3],
    /// Masks of uniform `select` conditions: (i8 for scalars, f32x4 for vectors).
    masks: HashMap<Value, (cranelift_codegen::ir::Value, cranelift_codegen::ir::Value)>,
    /// Uniform conditions whose value the current loop version was specialised for.
    known: HashMap<Value, bool>,
    /// The values the current loop version computes (`None`: all of them).
    live: Option<std::collections::HashSet<Value>>,
}

/// Uniform conditions (of selects and output guards) worth specialising a flat kernel's
/// loop on: with each fixed, a select computes only the side it picks and a guarded write
/// is unconditional or gone. At most [`MAX_VERSIONED`] distinct conditions, else none; and
/// only in kernels that stream the gradient (the per-step pass over every parameter), since
/// versions multiply code size: Muon's ~800 unrolled Newton-Schulz kernels do not need it.
const MAX_VERSIONED: usize = 3;

pub(super) fn versioned_conditions(
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    is_uniform: &dyn Fn(Value) -> bool,
) -> Vec<Value> {
    if !abi.buffers.contains(&crate::plan::Buffer::Grad) {
        return Vec::new();
    }
    let mut conds = Vec::new();
    for v in &k.body {
        let inst = func.inst(*v);
        if inst.op == Op::Select && is_uniform(inst.args[0]) && !conds.contains(&inst.args[0]) {
            conds.push(inst.args[0]);
        }
    }
    for o in &k.outputs {
        if let Some(g) = o.guard {
            if !conds.contains(&g) {
                conds.push(g);
            }
        }
    }
    if conds.len() > MAX_VERSIONED {
        conds.clear();
    }
    conds
}

/// The values a loop version needs: what its outputs and reductions read, following only
/// the picked side of selects whose condition it knows.
pub(super) fn live_values(
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    known: &HashMap<Value, bool>,
) -> std::collections::HashSet<Value> {
    let body: std::collections::HashSet<Value> = k.body.iter().copied().collect();
    let mut work: Vec<Value> = Vec::new();
    for o in &k.outputs {
        if o.guard.is_none_or(|g| known.get(&g) != Some(&false)) {
            work.push(o.value);
        }
    }
    for r in abi.reductions.iter().chain(abi.axis_reductions.iter().map(|(r, _)| r)) {
        work.push(func.inst(*r).args[0]);
    }
    let mut live = std::collections::HashSet::new();
    while let Some(v) = work.pop() {
        if !live.insert(v) || !body.contains(&v) {
            continue;
        }
        let inst = func.inst(v);
        match (&inst.op, known.get(&inst.args.first().copied().unwrap_or(v))) {
            (Op::Select, Some(c)) => work.push(if *c { inst.args[1] } else { inst.args[2] }),
            _ => work.extend(inst.args.iter().copied()),
        }
    }
    live
}

/// Emits one kernel's function body into `b` (whose signature is [`signature`]).
pub fn build(b: &mut FunctionBuilder, func: &Func, k: &Kernel, abi: &KernelAbi, helpers: &HelperRefs) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let (bufs, scalars, sizes_ptr, start, end, partials) =
        (params[0], params[1], params[2], params[3], params[4], params[5]);
    let ptrs = (0..abi.buffers.len()).map(|i| b.ins().load(types::I64, flags(), bufs, (8 * i) as i32)).collect();
    let sizes = [0, 1, 2].map(|i| b.ins().load(types::I64, flags(), sizes_ptr, 8 * i));
    let mut uniform = HashMap::new();
    for (i, v) in abi.scalars.iter().enumerate() {
        // The host passes each scalar four times over: a vector load, unlike a `splat`, is
        // not sunk back into the loop by Cranelift's egraph (it re-broadcast every scalar
        // in every iteration), and as a memory operand it costs no register.
        let s = b.ins().load(types::F32, flags(), scalars, (16 * i) as i32);
        let splat = b.ins().load(types::F32X4, flags(), scalars, (16 * i) as i32);
        uniform.insert(*v, (s, splat));
    }
    // Scalar inputs (scalar state read in a larger domain) are uniform too.
    let domain = names(&k.domain);
    for (v, buf) in &k.inputs {
        if func.ty(*v).is_scalar() && !domain.is_empty() {
            let slot = abi.buffers.iter().position(|x| x == buf).unwrap_or(0);
            let p = b.ins().load(types::I64, flags(), bufs, (8 * slot) as i32);
            let s = b.ins().load(types::F32, flags(), p, 0);
            let splat = b.ins().splat(types::F32X4, s);
            uniform.insert(*v, (s, splat));
        }
    }
    let mut e = Emitter { b, helpers, consts: HashMap::new() };
    // Constants, uniform instructions and uniform select masks, once, before any loop:
    // Cranelift does not hoist them out of loops itself.
    for x in [0.0f32, 1.0, -1.0] {
        let s = e.b.ins().f32const(x);
        let v = e.b.ins().splat(types::F32X4, s);
        e.consts.insert((x.to_bits(), false), s);
        e.consts.insert((x.to_bits(), true), v);
    }
    hoist_uniforms(&mut e, &mut uniform, func, k);
    let mut masks = HashMap::new();
    for v in &k.body {
        let inst = func.inst(*v);
        if inst.op == Op::Select {
            if let Some((s, splat)) = uniform.get(&inst.args[0]).copied() {
                let m = e.truth(types::F32, s);
                let mv = e.truth(types::F32X4, splat);
                let mv = e.b.ins().bitcast(types::F32X4, MemFlagsData::new(), mv);
                masks.insert(inst.args[0], (m, mv));
            }
        }
    }
    let out_guards = k
        .outputs
        .iter()
        .map(|o| {
            o.guard.map(|g| {
                let s = uniform[&g].0;
                e.truth(types::F32, s)
            })
        })
        .collect();
    let conds = if abi.mode == Mode::Flat {
        versioned_conditions(func, k, abi, &|v| uniform.contains_key(&v))
    } else {
        Vec::new()
    };
    let bf16 = abi.bf16.clone();
    let mut cx = Ctx { ptrs, bf16, uniform, out_guards, sizes, masks, known: HashMap::new(), live: None };
    if abi.mode == Mode::Grid {
        grid(&mut e, &mut cx, func, k, abi, start, end, partials);
        return;
    }
    if conds.is_empty() {
        flat(&mut e, &mut cx, func, k, abi, start, end, partials);
        return;
    }
    // One loop per combination of the uniform conditions, chosen once per call.
    let mut index = e.b.ins().iconst(types::I64, 0);
    for (bit, c) in conds.iter().enumerate() {
        let s = cx.uniform[c].0;
        let t = e.truth(types::F32, s);
        let t = e.b.ins().uextend(types::I64, t);
        let t = e.b.ins().ishl_imm_u(t, bit as i64);
        index = e.b.ins().bor(index, t);
    }
    let versions: Vec<_> = (0..1usize << conds.len()).map(|_| e.b.create_block()).collect();
    for (n, block) in versions.iter().enumerate() {
        if n + 1 == versions.len() {
            e.b.ins().jump(*block, &[]);
            break;
        }
        let next = e.b.create_block();
        let is = e.b.ins().icmp_imm_s(IntCC::Equal, index, n as i64);
        e.b.ins().brif(is, *block, &[], next, &[]);
        e.b.switch_to_block(next);
        e.b.seal_block(next);
    }
    for (n, block) in versions.iter().enumerate() {
        e.b.switch_to_block(*block);
        e.b.seal_block(*block);
        cx.known = conds.iter().enumerate().map(|(bit, c)| (*c, n >> bit & 1 == 1)).collect();
        cx.live = Some(live_values(func, k, abi, &cx.known));
        flat(&mut e, &mut cx, func, k, abi, start, end, partials);
    }
}

/// Computes, in the entry block, every body instruction whose arguments are all uniform
/// (a select of host scalars, a broadcast of one), scalar and splat.
fn hoist_uniforms(
    e: &mut Emitter,
    uniform: &mut HashMap<Value, (cranelift_codegen::ir::Value, cranelift_codegen::ir::Value)>,
    func: &Func,
    k: &Kernel,
) {
    for v in &k.body {
        let inst = func.inst(*v);
        if !matches!(inst.op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Broadcast)
            || !inst.args.iter().all(|a| uniform.contains_key(a))
        {
            continue;
        }
        let a: Vec<_> = inst.args.iter().map(|x| uniform[x].0).collect();
        let s = match &inst.op {
            Op::Unary(u) => e.unary(types::F32, *u, a[0]),
            Op::Binary(b) => e.binary(types::F32, *b, a[0], a[1]),
            Op::Select => {
                let m = e.truth(types::F32, a[0]);
                e.b.ins().select(m, a[1], a[2])
            }
            _ => a[0],
        };
        let splat = e.b.ins().splat(types::F32X4, s);
        uniform.insert(*v, (s, splat));
    }
}

/// The value of `v` in the current iteration, from `env` or the uniforms.
fn get(env: &HashMap<Value, Val>, cx: &Ctx, v: Value) -> Val {
    if let Some(x) = env.get(&v) {
        return *x;
    }
    let (s, splat) = cx.uniform[&v];
    Val::Uniform(s, splat)
}

/// Computes the body of one iteration (vector `ty` or scalar), given the loaded inputs.
/// Returns the environment; reductions and stores are left to the caller.
fn body(
    e: &mut Emitter,
    cx: &Ctx,
    func: &Func,
    k: &Kernel,
    ty: Type,
    mut env: HashMap<Value, Val>,
) -> HashMap<Value, Val> {
    for v in &k.body {
        if cx.uniform.contains_key(v) || cx.live.as_ref().is_some_and(|l| !l.contains(v)) {
            continue;
        }
        let inst = func.inst(*v);
        if inst.op == Op::Select {
            if let Some(c) = cx.known.get(&inst.args[0]) {
                let picked = get(&env, cx, if *c { inst.args[1] } else { inst.args[2] });
                env.insert(*v, picked);
                continue;
            }
        }
        let as_ty = |x: Val| match x {
            Val::Varying(x) => x,
            Val::Uniform(s, splat) => {
                if ty == types::F32 {
                    s
                } else {
                    splat
                }
            }
        };
        let args: Vec<Val> = inst.args.iter().map(|a| get(&env, cx, *a)).collect();
        let vals: Vec<_> = args.iter().map(|a| as_ty(*a)).collect();
        let out = match &inst.op {
            Op::Store(_) | Op::Reduce(..) | Op::Eye => continue,
            Op::Broadcast => vals[0],
            Op::Unary(u) => e.unary(ty, *u, vals[0]),
            Op::Binary(bop) => e.binary(ty, *bop, vals[0], vals[1]),
            Op::Select => match cx.masks.get(&inst.args[0]) {
                // A uniform condition: its mask was made once, before the loop.
                Some((scalar, vector)) => {
                    if ty == types::F32 {
                        e.b.ins().select(*scalar, vals[1], vals[2])
                    } else {
                        e.b.ins().bitselect(*vector, vals[1], vals[2])
                    }
                }
                None => {
                    let m = e.truth(ty, vals[0]);
                    e.pick(ty, m, vals[1], vals[2])
                }
            },
            // Everything else reaches a kernel as an input or a uniform.
            _ => continue,
        };
        env.insert(*v, Val::Varying(out));
    }
    env
}

#[allow(clippy::too_many_arguments)]
fn flat(
    e: &mut Emitter,
    cx: &mut Ctx,
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    start: cranelift_codegen::ir::Value,
    end: cranelift_codegen::ir::Value,
    partials: cranelift_codegen::ir::Value,
) {
    let step = LANES * UNROLL;
    let sums: Vec<(Value, ReduceKind)> = abi
        .reductions
        .iter()
        .map(|r| match func.inst(*r).op {
            Op::Reduce(kind, _) => (*r, kind),
            _ => (*r, ReduceKind::Sum),
        })
        .collect();
    // Vector accumulators: a sum keeps two f64x2 (lanes 0-1 and 2-3), a max-abs one f32x4.
    let i_var = e.b.declare_var(types::I64);
    e.b.def_var(i_var, start);
    let vacc: Vec<VecAcc> = sums.iter().map(|(_, kind)| VecAcc::new(e, *kind)).collect();
    let len = e.b.ins().isub(end, start);
    let vec_len = e.b.ins().band_imm_s(len, !(step - 1));
    let vec_end = e.b.ins().iadd(start, vec_len);

    let vhead = e.b.create_block();
    let vbody = e.b.create_block();
    let vexit = e.b.create_block();
    e.b.ins().jump(vhead, &[]);
    e.b.switch_to_block(vhead);
    let i = e.b.use_var(i_var);
    let more = e.b.ins().icmp(IntCC::UnsignedLessThan, i, vec_end);
    e.b.ins().brif(more, vbody, &[], vexit, &[]);
    e.b.switch_to_block(vbody);
    e.b.seal_block(vbody);
    let i = e.b.use_var(i_var);
    let byte = e.b.ins().ishl_imm_u(i, 2);
    for u in 0..UNROLL {
        let off = (u * LANES * 4) as i32;
        let env = load_inputs(e, cx, func, k, abi, types::F32X4, byte, off);
        let env = body(e, cx, func, k, types::F32X4, env);
        for (ri, (r, _)) in sums.iter().enumerate() {
            let x = vector_of(get(&env, cx, func.inst(*r).args[0]));
            vacc[ri].add(e, x);
        }
        store_outputs(e, cx, k, abi, &env, types::F32X4, byte, off);
    }
    let i = e.b.use_var(i_var);
    let next = e.b.ins().iadd_imm_s(i, step);
    e.b.def_var(i_var, next);
    e.b.ins().jump(vhead, &[]);
    e.b.seal_block(vhead);
    e.b.switch_to_block(vexit);
    e.b.seal_block(vexit);

    // Fold the vector accumulators into scalar ones for the tail.
    let mut sacc: Vec<Variable> = Vec::new();
    for acc in &vacc {
        let var = e.b.declare_var(types::F64);
        let x = acc.fold_lanes(e);
        e.b.def_var(var, x);
        sacc.push(var);
    }

    let thead = e.b.create_block();
    let tbody = e.b.create_block();
    let texit = e.b.create_block();
    e.b.ins().jump(thead, &[]);
    e.b.switch_to_block(thead);
    let i = e.b.use_var(i_var);
    let more = e.b.ins().icmp(IntCC::UnsignedLessThan, i, end);
    e.b.ins().brif(more, tbody, &[], texit, &[]);
    e.b.switch_to_block(tbody);
    e.b.seal_block(tbody);
    let i = e.b.use_var(i_var);
    let byte = e.b.ins().ishl_imm_u(i, 2);
    let env = load_inputs(e, cx, func, k, abi, types::F32, byte, 0);
    let env = body(e, cx, func, k, types::F32, env);
    for (ri, (r, kind)) in sums.iter().enumerate() {
        let x = scalar_of(get(&env, cx, func.inst(*r).args[0]));
        accumulate_var(e, *kind, sacc[ri], x);
    }
    store_outputs(e, cx, k, abi, &env, types::F32, byte, 0);
    let i = e.b.use_var(i_var);
    let next = e.b.ins().iadd_imm_s(i, 1);
    e.b.def_var(i_var, next);
    e.b.ins().jump(thead, &[]);
    e.b.seal_block(thead);
    e.b.switch_to_block(texit);
    e.b.seal_block(texit);
    for (ri, var) in sacc.iter().enumerate() {
        let x = e.b.use_var(*var);
        e.b.ins().store(flags(), x, partials, (8 * ri) as i32);
    }
    e.b.ins().return_(&[]);
}

/// Loads every input that varies over the domain at byte offset `byte + off`.
#[allow(clippy::too_many_arguments)]
fn load_inputs(
    e: &mut Emitter,
    cx: &Ctx,
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    ty: Type,
    byte: cranelift_codegen::ir::Value,
    off: i32,
) -> HashMap<Value, Val> {
    let mut env = HashMap::new();
    let domain_is_scalar = k.domain == gdc_dsl::types::Shape::Scalar;
    for (v, buf) in &k.inputs {
        if func.ty(*v).is_scalar() && !domain_is_scalar || cx.live.as_ref().is_some_and(|l| !l.contains(v)) {
            continue;
        }
        let slot = abi.buffers.iter().position(|x| x == buf).unwrap_or(0);
        let x = e.load_elem(ty, cx.ptrs[slot], byte, off, cx.bf16[slot]);
        env.insert(*v, Val::Varying(x));
    }
    env
}

/// Writes every output at byte offset `byte + off`, each under its guard.
#[allow(clippy::too_many_arguments)]
fn store_outputs(
    e: &mut Emitter,
    cx: &Ctx,
    k: &Kernel,
    abi: &KernelAbi,
    env: &HashMap<Value, Val>,
    ty: Type,
    byte: cranelift_codegen::ir::Value,
    off: i32,
) {
    for (oi, o) in k.outputs.iter().enumerate() {
        let known = o.guard.and_then(|g| cx.known.get(&g).copied());
        if abi.axis_reductions.iter().any(|(r, _)| *r == o.value) || known == Some(false) {
            continue;
        }
        let x = match get(env, cx, o.value) {
            Val::Varying(x) => x,
            Val::Uniform(s, splat) => {
                if ty == types::F32 {
                    s
                } else {
                    splat
                }
            }
        };
        let slot = abi.buffers.iter().position(|b| *b == o.buffer).unwrap_or(0);
        let write = |e: &mut Emitter| e.store_elem(ty, x, cx.ptrs[slot], byte, off, cx.bf16[slot]);
        match (cx.out_guards[oi], known) {
            (_, Some(false)) => {}
            (None, _) | (_, Some(true)) => write(e),
            (Some(g), None) => {
                let yes = e.b.create_block();
                let done = e.b.create_block();
                e.b.ins().brif(g, yes, &[], done, &[]);
                e.b.switch_to_block(yes);
                e.b.seal_block(yes);
                write(e);
                e.b.ins().jump(done, &[]);
                e.b.switch_to_block(done);
                e.b.seal_block(done);
            }
        }
    }
}

/// A counted loop `for var in 0..n { inner }` (i64), leaving the builder after it.
fn counted_loop(e: &mut Emitter, n: cranelift_codegen::ir::Value, inner: &mut dyn FnMut(&mut Emitter, Variable)) {
    let zero = e.b.ins().iconst(types::I64, 0);
    range_loop(e, zero, n, 1, inner);
}

/// A loop `for var in (lo..hi).step_by(step) { inner }` (i64, unsigned comparison),
/// leaving the builder after it.
fn range_loop(
    e: &mut Emitter,
    lo: cranelift_codegen::ir::Value,
    hi: cranelift_codegen::ir::Value,
    step: i64,
    inner: &mut dyn FnMut(&mut Emitter, Variable),
) {
    let var = e.b.declare_var(types::I64);
    e.b.def_var(var, lo);
    let head = e.b.create_block();
    let bodyb = e.b.create_block();
    let exit = e.b.create_block();
    e.b.ins().jump(head, &[]);
    e.b.switch_to_block(head);
    let i = e.b.use_var(var);
    let more = e.b.ins().icmp(IntCC::UnsignedLessThan, i, hi);
    e.b.ins().brif(more, bodyb, &[], exit, &[]);
    e.b.switch_to_block(bodyb);
    e.b.seal_block(bodyb);
    inner(e, var);
    let i = e.b.use_var(var);
    let next = e.b.ins().iadd_imm_s(i, step);
    e.b.def_var(var, next);
    e.b.ins().jump(head, &[]);
    e.b.seal_block(head);
    e.b.switch_to_block(exit);
    e.b.seal_block(exit);
}

/// How a grid kernel reads one of its tensor inputs at grid position (r, c).
#[derive(Clone, Copy, PartialEq, Eq)]
enum GridOperand {
    /// Shaped like the domain: at the flat index.
    Domain,
    /// A `[rows]` vector: one value per row.
    Row,
    /// A `[cols]` vector: one value per column, contiguous along a row.
    Col,
    /// Anything else (a transposed operand): by `index_in`, one element at a time.
    Other,
}

/// A grid kernel over rows `start..end` of its matrix domain, every column. Per row, a
/// four-lane loop over the columns then a scalar tail, when every operand is shaped like
/// the domain, a row vector (its value splatted) or a column vector (contiguous) and there
/// is no `eye`; otherwise one element at a time. Partials (see `crate::chunks`): the full
/// reductions, then per axis reduction this band's value for each of its rows, or a value
/// for each column (accumulated in place, from zero). The runtime writes axis reductions to
/// their buffers.
#[allow(clippy::too_many_arguments)]
fn grid(
    e: &mut Emitter,
    cx: &mut Ctx,
    func: &Func,
    k: &Kernel,
    abi: &KernelAbi,
    start: cranelift_codegen::ir::Value,
    end: cranelift_codegen::ir::Value,
    partials: cranelift_codegen::ir::Value,
) {
    let domain = names(&k.domain);
    let cols = cx.sizes[size_index(&domain[1])];
    let nfull = abi.reductions.len() as i64;
    let band = e.b.ins().isub(end, start);
    // Scratch offsets (in f64 elements from `partials`) of the axis reductions.
    let mut scratch: Vec<cranelift_codegen::ir::Value> = Vec::new();
    let mut at = e.b.ins().iconst(types::I64, nfull);
    for (_, by_rows) in &abi.axis_reductions {
        scratch.push(at);
        at = e.b.ins().iadd(at, if *by_rows { band } else { cols });
    }
    // Each axis reduction's scratch starts at its identity (0, or -infinity for a maximum).
    for (ai, (r, by_rows)) in abi.axis_reductions.iter().enumerate() {
        let identity = ReduceKind::of(func, *r).identity();
        let n = if *by_rows { band } else { cols };
        let base = scratch[ai];
        counted_loop(e, n, &mut |e, var| {
            let i = e.b.use_var(var);
            let i = e.b.ins().iadd(i, base);
            let byte = e.b.ins().ishl_imm_u(i, 3);
            let addr = e.b.ins().iadd(partials, byte);
            let z = e.b.ins().f64const(identity);
            e.b.ins().store(flags(), z, addr, 0);
        });
    }
    let operands: Vec<(Value, usize, GridOperand, Vec<String>)> = k
        .inputs
        .iter()
        .filter(|(v, _)| func.ty(*v).shape != gdc_dsl::types::Shape::Scalar)
        .map(|(v, buf)| {
            let vn = names(&func.ty(*v).shape);
            let kind = if vn == domain {
                GridOperand::Domain
            } else if vn == [domain[0].clone()] {
                GridOperand::Row
            } else if vn == [domain[1].clone()] {
                GridOperand::Col
            } else {
                GridOperand::Other
            };
            (*v, abi.buffers.iter().position(|x| x == buf).unwrap_or(0), kind, vn)
        })
        .collect();
    let vectorize =
        operands.iter().all(|o| o.2 != GridOperand::Other) && !k.body.iter().any(|v| func.inst(*v).op == Op::Eye);
    let kinds: Vec<ReduceKind> = abi.reductions.iter().map(|r| ReduceKind::of(func, *r)).collect();
    let axis_kinds: Vec<ReduceKind> = abi.axis_reductions.iter().map(|(r, _)| ReduceKind::of(func, *r)).collect();
    let row_axes: Vec<usize> = (0..abi.axis_reductions.len()).filter(|a| abi.axis_reductions[*a].1).collect();
    let vfull: Vec<VecAcc> = kinds.iter().map(|kind| VecAcc::new(e, *kind)).collect();
    let sfull: Vec<Variable> = kinds.iter().map(|kind| identity_var(e, *kind)).collect();
    let vrow: Vec<VecAcc> = row_axes.iter().map(|a| VecAcc::new(e, axis_kinds[*a])).collect();
    let srow: Vec<Variable> = row_axes.iter().map(|a| identity_var(e, axis_kinds[*a])).collect();
    let cxr: &Ctx = cx;
    let zero = e.b.ins().iconst(types::I64, 0);
    range_loop(e, start, end, 1, &mut |e, rvar| {
        let r = e.b.use_var(rvar);
        let rowflat = e.b.ins().imul(r, cols);
        for (acc, var) in vrow.iter().zip(&srow) {
            acc.reset(e);
            let z = e.b.ins().f64const(acc.kind.identity());
            e.b.def_var(*var, z);
        }
        let rbyte = e.b.ins().ishl_imm_u(r, 2);
        let mut row_values = HashMap::new();
        for (v, slot, kind, _) in &operands {
            if *kind == GridOperand::Row {
                let x = e.load_elem(types::F32, cxr.ptrs[*slot], rbyte, 0, cxr.bf16[*slot]);
                row_values.insert(*v, x);
            }
        }
        let tail_start = if vectorize {
            let vec_cols = e.b.ins().band_imm_s(cols, !(LANES - 1));
            range_loop(e, zero, vec_cols, LANES, &mut |e, cvar| {
                let c = e.b.use_var(cvar);
                let flat = e.b.ins().iadd(rowflat, c);
                let byte = e.b.ins().ishl_imm_u(flat, 2);
                let cbyte = e.b.ins().ishl_imm_u(c, 2);
                let mut env = HashMap::new();
                for (v, slot, kind, _) in &operands {
                    let x = match kind {
                        GridOperand::Row => e.b.ins().splat(types::F32X4, row_values[v]),
                        GridOperand::Col => e.load_elem(types::F32X4, cxr.ptrs[*slot], cbyte, 0, cxr.bf16[*slot]),
                        _ => e.load_elem(types::F32X4, cxr.ptrs[*slot], byte, 0, cxr.bf16[*slot]),
                    };
                    env.insert(*v, Val::Varying(x));
                }
                let env = body(e, cxr, func, k, types::F32X4, env);
                for (ri, red) in abi.reductions.iter().enumerate() {
                    let x = vector_of(get(&env, cxr, func.inst(*red).args[0]));
                    vfull[ri].add(e, x);
                }
                for (ai, (red, by_rows)) in abi.axis_reductions.iter().enumerate() {
                    let x = vector_of(get(&env, cxr, func.inst(*red).args[0]));
                    if *by_rows {
                        let n = row_axes.iter().position(|a| *a == ai).unwrap_or(0);
                        vrow[n].add(e, x);
                    } else {
                        let at = e.b.ins().iadd(scratch[ai], c);
                        accumulate_lanes(e, axis_kinds[ai], partials, at, x);
                    }
                }
                store_outputs(e, cxr, k, abi, &env, types::F32X4, byte, 0);
            });
            vec_cols
        } else {
            zero
        };
        range_loop(e, tail_start, cols, 1, &mut |e, cvar| {
            let c = e.b.use_var(cvar);
            let flat = e.b.ins().iadd(rowflat, c);
            let byte = e.b.ins().ishl_imm_u(flat, 2);
            let mut env = HashMap::new();
            for (v, slot, kind, vn) in &operands {
                let x = match kind {
                    GridOperand::Row => row_values[v],
                    _ => {
                        let idx = if *kind == GridOperand::Domain { flat } else { index_in(e, cxr, vn, &domain, r, c) };
                        let b4 = e.b.ins().ishl_imm_u(idx, 2);
                        e.load_elem(types::F32, cxr.ptrs[*slot], b4, 0, cxr.bf16[*slot])
                    }
                };
                env.insert(*v, Val::Varying(x));
            }
            for v in &k.body {
                if func.inst(*v).op == Op::Eye {
                    let m = e.b.ins().icmp(IntCC::Equal, r, c);
                    let x = e.bool_of(types::F32, m);
                    env.insert(*v, Val::Varying(x));
                }
            }
            let env = body(e, cxr, func, k, types::F32, env);
            for (ri, red) in abi.reductions.iter().enumerate() {
                let x = scalar_of(get(&env, cxr, func.inst(*red).args[0]));
                accumulate_var(e, kinds[ri], sfull[ri], x);
            }
            for (ai, (red, by_rows)) in abi.axis_reductions.iter().enumerate() {
                let x = scalar_of(get(&env, cxr, func.inst(*red).args[0]));
                if *by_rows {
                    let n = row_axes.iter().position(|a| *a == ai).unwrap_or(0);
                    accumulate_var(e, axis_kinds[ai], srow[n], x);
                } else {
                    let at = e.b.ins().iadd(scratch[ai], c);
                    accumulate(e, axis_kinds[ai], partials, at, x);
                }
            }
            store_outputs(e, cxr, k, abi, &env, types::F32, byte, 0);
        });
        // This row's values of the reductions along the columns.
        let local = e.b.ins().isub(r, start);
        for (n, ai) in row_axes.iter().enumerate() {
            let x = vrow[n].fold(e, axis_kinds[*ai], srow[n]);
            let at = e.b.ins().iadd(scratch[*ai], local);
            let b8 = e.b.ins().ishl_imm_u(at, 3);
            let addr = e.b.ins().iadd(partials, b8);
            e.b.ins().store(flags(), x, addr, 0);
        }
    });
    for (ri, kind) in kinds.iter().enumerate() {
        let x = vfull[ri].fold(e, *kind, sfull[ri]);
        e.b.ins().store(flags(), x, partials, (8 * ri) as i32);
    }
    e.b.ins().return_(&[]);
}

/// A float64 variable holding the identity of a `kind` reduction.
fn identity_var(e: &mut Emitter, kind: ReduceKind) -> Variable {
    let var = e.b.declare_var(types::F64);
    let z = e.b.ins().f64const(kind.identity());
    e.b.def_var(var, z);
    var
}

/// A four-lane reduction accumulator: a sum in two f64x2 halves, a maximum (of magnitudes
/// or of values) in f32x4.
struct VecAcc {
    lo: Variable,
    hi: Option<Variable>,
    kind: ReduceKind,
}

impl VecAcc {
    fn new(e: &mut Emitter, kind: ReduceKind) -> VecAcc {
        let acc = match kind {
            ReduceKind::Sum => {
                VecAcc { lo: e.b.declare_var(types::F64X2), hi: Some(e.b.declare_var(types::F64X2)), kind }
            }
            ReduceKind::MaxAbs | ReduceKind::Max => VecAcc { lo: e.b.declare_var(types::F32X4), hi: None, kind },
        };
        acc.reset(e);
        acc
    }

    fn reset(&self, e: &mut Emitter) {
        match self.hi {
            Some(hi) => {
                let z = e.b.ins().f64const(0.0);
                let z2 = e.b.ins().splat(types::F64X2, z);
                e.b.def_var(self.lo, z2);
                e.b.def_var(hi, z2);
            }
            None => {
                let z = e.fconst(types::F32X4, self.kind.identity() as f32);
                e.b.def_var(self.lo, z);
            }
        }
    }

    /// Folds four float32 lanes in.
    fn add(&self, e: &mut Emitter, x: cranelift_codegen::ir::Value) {
        match self.hi {
            Some(hi) => {
                let (lo_x, hi_x) = promote_halves(e, x);
                let a = e.b.use_var(self.lo);
                let a = e.b.ins().fadd(a, lo_x);
                e.b.def_var(self.lo, a);
                let c = e.b.use_var(hi);
                let c = e.b.ins().fadd(c, hi_x);
                e.b.def_var(hi, c);
            }
            None => {
                let a = e.b.use_var(self.lo);
                let ax = if self.kind == ReduceKind::MaxAbs { e.b.ins().fabs(x) } else { x };
                let m = e.b.ins().fmax(a, ax);
                e.b.def_var(self.lo, m);
            }
        }
    }

    /// The lanes folded together, in float64.
    fn fold_lanes(&self, e: &mut Emitter) -> cranelift_codegen::ir::Value {
        match self.hi {
            Some(hi) => {
                let lo = e.b.use_var(self.lo);
                let hi = e.b.use_var(hi);
                let s = e.b.ins().fadd(lo, hi);
                let a = e.b.ins().extractlane(s, 0);
                let c = e.b.ins().extractlane(s, 1);
                e.b.ins().fadd(a, c)
            }
            None => {
                let v = e.b.use_var(self.lo);
                let mut m = e.b.ins().extractlane(v, 0);
                for lane in 1..LANES as u8 {
                    let x = e.b.ins().extractlane(v, lane);
                    m = e.b.ins().fmax(m, x);
                }
                e.b.ins().fpromote(types::F64, m)
            }
        }
    }

    /// The lanes folded together and with the scalar accumulator `tail`, in float64.
    fn fold(&self, e: &mut Emitter, kind: ReduceKind, tail: Variable) -> cranelift_codegen::ir::Value {
        let x = self.fold_lanes(e);
        let t = e.b.use_var(tail);
        match kind {
            ReduceKind::Sum => e.b.ins().fadd(x, t),
            ReduceKind::MaxAbs | ReduceKind::Max => e.b.ins().fmax(x, t),
        }
    }
}

/// Lanes 0-1 and 2-3 of a float32x4, each widened to float64x2.
fn promote_halves(
    e: &mut Emitter,
    x: cranelift_codegen::ir::Value,
) -> (cranelift_codegen::ir::Value, cranelift_codegen::ir::Value) {
    let lo = e.b.ins().fvpromote_low(x);
    let bytes = e.b.ins().bitcast(types::I8X16, MemFlagsData::new().with_endianness(Endianness::Little), x);
    let mask = e.b.func.dfg.immediates.push((8u8..16).chain(8..16).collect::<Vec<u8>>().into());
    let hi_bytes = e.b.ins().shuffle(bytes, bytes, mask);
    let hi_f = e.b.ins().bitcast(types::F32X4, MemFlagsData::new().with_endianness(Endianness::Little), hi_bytes);
    (lo, e.b.ins().fvpromote_low(hi_f))
}

/// partials[at..at + 4] (+)= the four lanes of `x`, in float64.
fn accumulate_lanes(
    e: &mut Emitter,
    kind: ReduceKind,
    partials: cranelift_codegen::ir::Value,
    at: cranelift_codegen::ir::Value,
    x: cranelift_codegen::ir::Value,
) {
    let b8 = e.b.ins().ishl_imm_u(at, 3);
    let addr = e.b.ins().iadd(partials, b8);
    let x = if kind == ReduceKind::MaxAbs { e.b.ins().fabs(x) } else { x };
    let (lo_x, hi_x) = promote_halves(e, x);
    for (off, part) in [(0, lo_x), (16, hi_x)] {
        let acc = e.b.ins().load(types::F64X2, flags(), addr, off);
        let n = match kind {
            ReduceKind::Sum => e.b.ins().fadd(acc, part),
            ReduceKind::MaxAbs | ReduceKind::Max => e.b.ins().fmax(acc, part),
        };
        e.b.ins().store(flags(), n, addr, off);
    }
}

/// var (+)= x, in float64.
fn accumulate_var(e: &mut Emitter, kind: ReduceKind, var: Variable, x: cranelift_codegen::ir::Value) {
    let a = e.b.use_var(var);
    let n = fold_f64(e, kind, a, x);
    e.b.def_var(var, n);
}

/// `acc` (float64) folded with the float32 `x`: a sum, or the larger of `acc` and `|x|`
/// (or `x`).
fn fold_f64(
    e: &mut Emitter,
    kind: ReduceKind,
    acc: cranelift_codegen::ir::Value,
    x: cranelift_codegen::ir::Value,
) -> cranelift_codegen::ir::Value {
    match kind {
        ReduceKind::Sum => {
            let x64 = e.b.ins().fpromote(types::F64, x);
            e.b.ins().fadd(acc, x64)
        }
        ReduceKind::MaxAbs | ReduceKind::Max => {
            let ax = if kind == ReduceKind::MaxAbs { e.b.ins().fabs(x) } else { x };
            let x64 = e.b.ins().fpromote(types::F64, ax);
            e.b.ins().fmax(acc, x64)
        }
    }
}

fn vector_of(v: Val) -> cranelift_codegen::ir::Value {
    match v {
        Val::Varying(x) => x,
        Val::Uniform(_, splat) => splat,
    }
}

fn scalar_of(v: Val) -> cranelift_codegen::ir::Value {
    match v {
        Val::Varying(x) => x,
        Val::Uniform(s, _) => s,
    }
}

/// partials[at] (+)= x, in float64.
fn accumulate(
    e: &mut Emitter,
    kind: ReduceKind,
    partials: cranelift_codegen::ir::Value,
    at: cranelift_codegen::ir::Value,
    x: cranelift_codegen::ir::Value,
) {
    let b8 = e.b.ins().ishl_imm_u(at, 3);
    let addr = e.b.ins().iadd(partials, b8);
    let acc = e.b.ins().load(types::F64, flags(), addr, 0);
    let n = fold_f64(e, kind, acc, x);
    e.b.ins().store(flags(), n, addr, 0);
}

/// The flat index into a broadcast operand with dimension names `vn` at grid position
/// (r, c): each of its dimensions takes the index of the first domain dimension of the same
/// name (the interpreter's rule).
fn index_in(
    e: &mut Emitter,
    cx: &Ctx,
    vn: &[String],
    domain: &[String],
    r: cranelift_codegen::ir::Value,
    c: cranelift_codegen::ir::Value,
) -> cranelift_codegen::ir::Value {
    let mut off = e.b.ins().iconst(types::I64, 0);
    for name in vn {
        let pos = domain.iter().position(|d| d == name).unwrap_or(0);
        let idx = if pos == 0 { r } else { c };
        let size = cx.sizes[size_index(name)];
        let scaled = e.b.ins().imul(off, size);
        off = e.b.ins().iadd(scaled, idx);
    }
    off
}
