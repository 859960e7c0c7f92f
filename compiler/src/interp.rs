//! The reference interpreter: executes a kernel plan in float64 — the oracle every backend is
//! compared with. It runs the plan item by item, and a kernel sees only its input buffers,
//! the host and per-parameter scalars and the reduction slots, so a plan that forgets to
//! materialise a value fails here with an error instead of computing something.

use crate::inputs::StepInputs;
use crate::ir::{
    eval_binary, eval_unary, round_significand, Func, HyperTy, Module, Op, Pattern, Precision, ReduceKind, Role,
    RootMethod, ShapeScalar, Target, Value, BF16_BITS, F32_BITS, TF32_BITS,
};
use crate::plan::{folds, Buffer, FuncPlan, Item, Pass, Plan};
use gdc_dsl::types::Shape;
use std::collections::HashMap;

/// The most elements one buffer may have (2^31): larger ones are refused when a parameter is
/// bound, with an error, rather than failing an allocation midway through a step.
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// The most dimensions a parameter may have (PyTorch's tensors, for one, allow 25 but
/// models use 1 to 5); more is refused when it is bound.
pub const MAX_RANK: usize = 16;

/// A float64 tensor: sizes per dimension (none for a scalar), row-major data, and the
/// dimension names the plan gave it (`p` stands for the parameter's own, flattened, shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub names: Vec<String>,
    pub sizes: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    fn scalar(x: f64) -> Tensor {
        Tensor { names: vec![], sizes: vec![], data: vec![x] }
    }

    pub fn as_scalar(&self) -> f64 {
        self.data[0]
    }
}

/// Misuse of the interpreter, or (`Internal`) a plan that cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpError {
    #[error("unknown hyperparameter `{name}`; this optimizer has: {known}")]
    UnknownHyper { name: String, known: String },
    #[error("hyperparameter `{name}` is {ty}, but {value} is not")]
    HyperType { name: String, ty: &'static str, value: f64 },
    #[error("hyperparameter `{name}` is not optional: it cannot be unset (declare it `optional hyper {name} = none`)")]
    NotOptional { name: String },
    #[error("hyperparameter `{name}` must be within {lo}..={hi}, got {value}")]
    HyperRange { name: String, lo: f64, hi: f64, value: f64 },
    #[error("optimizer `{optimizer}` has no update for parameter `{param}` of shape {shape:?}: {why}")]
    NoVariant { optimizer: String, param: String, shape: Vec<usize>, why: &'static str },
    #[error("expected {expected} {what}, got {got}")]
    Count { what: &'static str, expected: usize, got: usize },
    #[error("{what} `{param}` has {got} elements, but its shape {shape:?} has {expected}")]
    Length { what: &'static str, param: String, shape: Vec<usize>, expected: usize, got: usize },
    #[error("parameter `{param}` of shape {shape:?} needs a {what} of {elements} elements, more than the {limit} this backend holds")]
    TooLarge { param: String, shape: Vec<usize>, what: String, elements: u128, limit: u64 },
    #[error("parameter `{param}` of shape {shape:?} has no elements; leave it out of the optimizer's parameters")]
    Empty { param: String, shape: Vec<usize> },
    #[error("policy `{policy}` routes no optimizer to parameter `{param}` of shape {shape:?} and role `{role}`: add a route for it (a last `_ -> NAME` takes everything)")]
    NoRoute { policy: String, param: String, shape: Vec<usize>, role: &'static str },
    #[error("parameter `{param}` of shape {shape:?} has base shape {base:?}: a base shape has the parameter's rank and no zero dimension")]
    BaseShape { param: String, shape: Vec<usize>, base: Vec<usize> },
    #[error("parameter `{param}` has {rank} dimensions, more than the {limit} a parameter may have: reshape it (an optimizer sees a matrix as [rows, product of the rest])")]
    Rank { param: String, rank: usize, limit: usize },
    #[error(
        "no parameter named `{param}` is bound: inputs are handed over by the names the parameters were bound with"
    )]
    InputParam { param: String },
    #[error("parameter `{param}` is stepped as a batch of matrices, which takes no inputs yet: bind its matrices as separate parameters")]
    InputBatched { param: String },
    #[error("`{input}` (given for parameter `{param}`) is not an input of this optimizer; it declares: {declared}")]
    UnknownInput { param: String, input: String, declared: String },
    #[error("input `{input}` of parameter `{param}` is given twice in one step")]
    DuplicateInput { param: String, input: String },
    #[error("input `{input}` of parameter `{param}` has shape {shape:?}, but this optimizer declares it {expected}")]
    InputShape { param: String, input: String, shape: Vec<usize>, expected: String },
    #[error(
        "parameter `{param}`'s inputs disagree on `{dim}`: {first_size} in `{first}`, {second_size} in `{second}`"
    )]
    InputDim { param: String, dim: String, first: String, first_size: usize, second: String, second_size: usize },
    #[error("step {step} reads input `{input}` of parameter `{param}`, which it was not given: hand it over with the step (nothing was stepped)")]
    MissingInput { param: String, input: String, step: u64 },
    #[error("internal error (a compiler bug): {0}")]
    Internal(String),
}

/// Where one member stands (a parameter, or one matrix of a batched one: see [`members`]):
/// its variant, dimensions and state buffers.
#[derive(Clone, Debug)]
pub struct BoundParam {
    /// The member's name: the parameter's, or `w[i]` for matrix `i` of a batched `w`.
    pub name: String,
    /// The member's shape (`[rows, cols]` for a matrix of a batched parameter).
    pub shape: Vec<usize>,
    /// The index of the parameter it belongs to, in the list that was bound.
    pub param: usize,
    /// Where its elements start in that parameter (`numel` of them, contiguous).
    pub offset: usize,
    pub variant: usize,
    pub rows: usize,
    pub cols: usize,
    pub numel: usize,
    /// `rows` and `numel` of the whole parameter when this is a shard of it (see
    /// [`ParamInfo::shard`]); the shape scalars `rows` and `numel` read these.
    pub whole_rows: usize,
    pub whole_numel: usize,
    /// The rank of the parameter as given (a batched parameter's members keep it).
    pub rank: usize,
    /// The role the training code gave the parameter.
    pub role: Role,
    /// muP: the fan-in dimension over the base shape's (1 without a base shape).
    pub width_mult: f64,
    /// muP: how many dimensions differ from the base shape (0 without one).
    pub inf_dims: usize,
    /// State buffers by state index (`None`: not used by this parameter's variant).
    pub states: Vec<Option<Tensor>>,
    /// The shapes of the inputs handed over with the step being taken, by input (`None`:
    /// not given); set by the backend for each step, read by `present` and input dimensions.
    pub inputs: Vec<Option<Vec<usize>>>,
}

/// What the training code says about a parameter besides its name and shape: its role
/// (policies route by it, updates read it with `has_role`) and, for muP, its shape in the
/// base model (`width_mult`, `inf_dims`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamInfo {
    pub role: Role,
    pub base_shape: Option<Vec<usize>>,
    /// A shard of a larger parameter's leading dimension (distributed training): the whole
    /// parameter's leading extent. The shard may hold no rows on this rank: then it is bound
    /// with no elements and steps nothing, but takes part in every reduction a step combines
    /// across ranks. Its shape scalars (`numel`, `rows`, muP's) are the whole parameter's.
    pub shard: Option<usize>,
}

/// muP's `(width_mult, inf_dims)` of a member of `shape` (a matrix of a batched parameter
/// when `member_rank` is 2 and below the parameter's rank) from the parameter's base shape:
/// the fan-in dimension (`shape[1]`, a vector's `shape[0]`, a batched matrix's last) over
/// the base's, and the number of dimensions that differ.
fn mup_scalars(shape: &[usize], base: Option<&[usize]>, batched_member: bool) -> (f64, usize) {
    let Some(base) = base else { return (1.0, 0) };
    let fan_in = if batched_member || shape.len() == 1 { shape.len() - 1 } else { 1 };
    let width = shape.get(fan_in).copied().unwrap_or(1) as f64 / base.get(fan_in).copied().unwrap_or(1).max(1) as f64;
    (width, shape.iter().zip(base).filter(|(a, b)| a != b).count())
}

/// An optimizer bound to parameters, stepping them on the interpreter.
pub struct Interpreter {
    pub plan: Plan,
    pub hypers: Vec<f64>,
    pub globals: Vec<f64>,
    pub step: u64,
    /// The parameters as given to [`Interpreter::new`]: what `step` takes.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// The members bound (see [`members`]): one per parameter, or one per matrix of a
    /// parameter bound to `update(p: [..., rows, cols], g)`.
    pub params: Vec<BoundParam>,
    /// The `prepare` block's outputs for the current step.
    prepare_outs: Vec<f64>,
    /// Round every kernel and library value to float32, as a float32 backend stores it
    /// (scalars computed on the host stay float64 until a kernel reads them, as there). Off:
    /// the float64 reference. On: a second opinion where a discontinuous operation (`sign`,
    /// a comparison) flips on a value that is exactly zero in float32 and tiny in float64
    /// (see `gdc_runtime::verify`).
    pub float32: bool,
}

fn hyper_ty_name(t: HyperTy) -> &'static str {
    match t {
        HyperTy::F32 => "f32",
        HyperTy::Int => "an int",
        HyperTy::Bool => "a bool (0 or 1)",
        HyperTy::Precision => "a precision (24: f32, 11: tf32, 8: bf16)",
    }
}

impl Interpreter {
    /// Binds parameters by name and shape (a batched parameter as its matrices: see
    /// [`members`]). Their state is initialised at the first step, from the values that step
    /// is given.
    pub fn new(plan: Plan, params: &[(String, Vec<usize>)]) -> Result<Interpreter, InterpError> {
        Interpreter::new_with(plan, params, &[])
    }

    /// [`Interpreter::new`] with each parameter's role and base shape (`infos[i]` for
    /// parameter `i`): policies route by role, `has_role` and muP's scalars read them.
    pub fn new_with(
        plan: Plan,
        params: &[(String, Vec<usize>)],
        infos: &[ParamInfo],
    ) -> Result<Interpreter, InterpError> {
        let m = &plan.module;
        let hypers = m.hypers.iter().map(|h| h.default).collect();
        let globals = m.globals.iter().map(|g| g.init).collect();
        let bound = bind_with(&plan, params, infos)?;
        Ok(Interpreter {
            plan,
            hypers,
            globals,
            step: 0,
            inputs: params.to_vec(),
            params: bound,
            prepare_outs: Vec::new(),
            float32: false,
        })
    }

    pub fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), InterpError> {
        let i = check_hyper(&self.plan.module, name, value)?;
        self.hypers[i] = value;
        Ok(())
    }

    /// State `name` of member `member` (an index into [`Interpreter::params`]: the same as
    /// the parameter's index unless a parameter is batched), if that member has it.
    pub fn state(&self, member: usize, name: &str) -> Option<&Tensor> {
        let s = self.plan.module.states.iter().position(|st| st.name == name)?;
        self.params.get(member)?.states[s].as_ref()
    }

    /// State `name` of parameter `param` (by position in the list given to
    /// [`Interpreter::new`]), if it has it: a batched parameter's is its matrices' states one
    /// after the other (for state shaped like the parameter, the parameter's own layout).
    pub fn param_state(&self, param: usize, name: &str) -> Option<Vec<f64>> {
        let mut out = Vec::new();
        let mut any = false;
        for (i, bp) in self.params.iter().enumerate().filter(|(_, bp)| bp.param == param) {
            out.extend_from_slice(&self.state(i, name)?.data);
            any |= bp.param == param;
        }
        any.then_some(out)
    }

    /// One optimizer step: `params[i]` (the i-th parameter given to [`Interpreter::new`]) is
    /// updated in place from `grads[i]`; a batched parameter is stepped matrix by matrix.
    pub fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>]) -> Result<(), InterpError> {
        let none = StepInputs::none(self.params.len(), self.plan.module.inputs.len());
        self.step_with_inputs(params, grads, &none)
    }

    /// [`Interpreter::step`] with the step's inputs (see [`crate::inputs::collect`]). A
    /// required input the step reads but was not given is an error before anything changes.
    pub fn step_with_inputs(
        &mut self,
        params: &mut [Vec<f64>],
        grads: &[Vec<f64>],
        inputs: &StepInputs<f64>,
    ) -> Result<(), InterpError> {
        let lens: Vec<(usize, usize)> = params.iter().zip(grads).map(|(p, g)| (p.len(), g.len())).collect();
        check_lengths(&self.inputs, params.len(), grads.len(), &lens)?;
        // Each member's slice of its parameter and gradient (copies: this is the oracle).
        let mut mp: Vec<Vec<f64>> =
            self.params.iter().map(|bp| params[bp.param][bp.offset..bp.offset + bp.numel].to_vec()).collect();
        let mg: Vec<Vec<f64>> =
            self.params.iter().map(|bp| grads[bp.param][bp.offset..bp.offset + bp.numel].to_vec()).collect();
        // State is initialised at the first step, from the parameters and hyperparameters
        // in force then (as PyTorch's optimizers initialise state lazily in `step`).
        if self.step == 0 {
            for (i, initial) in mp.iter().enumerate() {
                let mut p = initial.clone();
                self.run_init(i, &mut p)?;
            }
        }
        self.step += 1;
        self.run_prepare()?;
        for (i, bp) in self.params.iter_mut().enumerate() {
            bp.inputs = inputs.shapes(i);
            bp.inputs.resize(self.plan.module.inputs.len(), None);
        }
        if let Err(e) = self.check_inputs_read() {
            self.step -= 1;
            return Err(e);
        }
        let stores = self.run_step(&mut mp, &mg, inputs)?;
        // Globals the update assigned: read at their old value by every parameter, stored once.
        for (gi, x) in stores {
            self.globals[gi] = x;
        }
        for (bp, p) in self.params.iter().zip(&mp) {
            params[bp.param][bp.offset..bp.offset + bp.numel].copy_from_slice(p);
        }
        Ok(())
    }

    /// Runs every update plan's gradient check (`plan/check.rs`) on `grads` and returns the
    /// members whose gradient holds non-finite elements, with how many, in binding order.
    /// Nothing else happens: no state, counter or parameter changes.
    pub fn check_gradients(&self, grads: &[Vec<f64>]) -> Result<Vec<(usize, f64)>, InterpError> {
        check_lengths(
            &self.inputs,
            grads.len(),
            grads.len(),
            &grads.iter().map(|g| (g.len(), g.len())).collect::<Vec<_>>(),
        )?;
        let mut bad = Vec::new();
        for (i, bp) in self.params.iter().enumerate() {
            let (func, fplan) = (&self.plan.module.variants[bp.variant].update, &self.plan.variants[bp.variant].update);
            let Some(check) = fplan.check else { continue };
            // The check reads only the gradient and constants.
            let mut host = HashMap::new();
            for v in &fplan.host {
                if matches!(func.inst(*v).op, Op::Const(_)) {
                    host.insert(*v, self.host_scalar(func, *v, &host, Some(bp))?);
                }
            }
            let g = &grads[bp.param][bp.offset..bp.offset + bp.numel];
            let mut p = Vec::new();
            let mut buffers =
                Buffers { p: &mut p, g, states: Vec::new(), temps: vec![None; fplan.temps.len()], inputs: Vec::new() };
            let mut slots: HashMap<Value, Tensor> = HashMap::new();
            let item = &fplan.items[check.item];
            run_item(&self.plan.module, func, fplan, item, bp, &mut buffers, &host, &host, &mut slots, self.float32)?;
            let count = slots.get(&check.count).map(Tensor::as_scalar).unwrap_or(f64::NAN);
            if count != 0.0 {
                bad.push((i, count));
            }
        }
        Ok(bad)
    }

    /// Which inputs each member's next step reads (optional ones only if given, which they
    /// are not before the step): the step number advanced and `prepare` run as the step
    /// would, then everything put back.
    pub fn inputs_next_step(&mut self) -> Result<Vec<Vec<bool>>, InterpError> {
        let (step, outs) = (self.step, self.prepare_outs.clone());
        self.step += 1;
        let result = self.run_prepare().and_then(|()| {
            let m = &self.plan.module;
            self.params
                .iter()
                .map(|bp| {
                    let (func, fplan) = (&m.variants[bp.variant].update, &self.plan.variants[bp.variant].update);
                    let (_, param) = self.scalar_envs(func, fplan, bp)?;
                    Ok(crate::inputs::read_by(fplan, m.inputs.len(), |g| param.get(&g).map(|x| *x != 0.0)))
                })
                .collect()
        });
        self.step = step;
        self.prepare_outs = outs;
        result
    }

    /// Refuses a step that reads a required input it was not given (see
    /// [`crate::inputs::read_by`]), before any member is stepped.
    fn check_inputs_read(&self) -> Result<(), InterpError> {
        let m = &self.plan.module;
        if m.inputs.is_empty() {
            return Ok(());
        }
        for bp in &self.params {
            let fplan = &self.plan.variants[bp.variant].update;
            let func = &m.variants[bp.variant].update;
            let (_, param) = self.scalar_envs(func, fplan, bp)?;
            let read = crate::inputs::read_by(fplan, m.inputs.len(), |g| param.get(&g).map(|x| *x != 0.0));
            crate::inputs::missing(m, bp, &read, &bp.inputs, self.step)?;
        }
        Ok(())
    }

    fn run_prepare(&mut self) -> Result<(), InterpError> {
        let inputs = HostInputs {
            hypers: &self.hypers,
            step: self.step,
            globals: &self.globals,
            prepare_outs: &[],
            param: None,
        };
        let (stores, outs) = run_prepare(&self.plan, &inputs)?;
        for (gi, x) in stores {
            self.globals[gi] = x;
        }
        self.prepare_outs = outs;
        Ok(())
    }
}

/// What host scalars read besides each other.
pub struct HostInputs<'a> {
    pub hypers: &'a [f64],
    pub step: u64,
    pub globals: &'a [f64],
    pub prepare_outs: &'a [f64],
    /// The parameter, for shape scalars.
    pub param: Option<&'a BoundParam>,
}

/// The value of a host scalar operation on its arguments' values, or `None` when `op` is not
/// one the host computes. Every backend evaluates host and per-parameter scalars (and the
/// device scalars of kernels) through this, in float64.
pub fn host_op(op: &Op, args: &[f64], inp: &HostInputs) -> Option<f64> {
    let arg = |i: usize| args.get(i).copied();
    Some(match op {
        Op::Const(c) => *c,
        Op::Bool(b) => f64::from(u8::from(*b)),
        Op::Hyper(i) => *inp.hypers.get(*i)?,
        Op::Step => inp.step as f64,
        Op::Global(i) => *inp.globals.get(*i)?,
        Op::PrepareOut(i) => inp.prepare_outs.get(*i).copied().unwrap_or(f64::NAN),
        Op::Shape(s) => {
            let p = inp.param?;
            match s {
                ShapeScalar::Numel => p.whole_numel as f64,
                ShapeScalar::Rows => p.whole_rows as f64,
                ShapeScalar::Cols => p.cols as f64,
                ShapeScalar::Rank => p.rank as f64,
                ShapeScalar::WidthMult => p.width_mult,
                ShapeScalar::InfDims => p.inf_dims as f64,
                ShapeScalar::RoleIn(mask) => f64::from(u8::from(mask & p.role.bit() != 0)),
                ShapeScalar::InputDim { input, axis } => p
                    .inputs
                    .get(*input as usize)?
                    .as_ref()
                    .and_then(|s| s.get(*axis as usize))
                    .map_or(f64::NAN, |d| *d as f64),
            }
        }
        Op::Present(i) => f64::from(u8::from(inp.param?.inputs.get(*i)?.is_some())),
        Op::Unary(u) => eval_unary(*u, arg(0)?),
        Op::Binary(b) => eval_binary(*b, arg(0)?, arg(1)?),
        Op::Select => {
            if arg(0)? != 0.0 {
                arg(1)?
            } else {
                arg(2)?
            }
        }
        _ => return None,
    })
}

/// Runs the `prepare` block: returns the global stores (index, value) to apply after it and
/// the values of its `let` outputs.
#[allow(clippy::type_complexity)]
pub fn run_prepare(plan: &Plan, inputs: &HostInputs) -> Result<(Vec<(usize, f64)>, Vec<f64>), InterpError> {
    let m = &plan.module;
    let mut env: HashMap<Value, f64> = HashMap::new();
    let mut stores = Vec::new();
    for v in &plan.prepare {
        let inst = m.prepare.inst(*v);
        if let Some(g) = inst.guard {
            if env.get(&g).copied().unwrap_or(0.0) == 0.0 {
                env.insert(*v, f64::NAN);
                continue;
            }
        }
        let arg = |a: &Value| {
            env.get(a)
                .copied()
                .ok_or_else(|| InterpError::Internal(format!("host scalar {v} reads {a} before it is computed")))
        };
        if let Op::Store(Target::Global(gi)) = inst.op {
            stores.push((gi, arg(&inst.args[0])?));
            continue;
        }
        let args = inst.args.iter().map(arg).collect::<Result<Vec<_>, _>>()?;
        let x = host_op(&inst.op, &args, inputs)
            .ok_or_else(|| InterpError::Internal(format!("{v} ({:?}) is not a host scalar", inst.op)))?;
        env.insert(*v, x);
    }
    let outs = m.prepare_outs.iter().map(|(_, v)| env.get(v).copied().unwrap_or(f64::NAN)).collect();
    Ok((stores, outs))
}

/// The globals an update stores this step, from its plan's `after` list (run once after
/// every item of the step has run for every parameter): `known(v)` gives a scalar the step
/// already computed (host, the first member's own, or a reduction over every parameter
/// already folded), `fold(kind, arg)` folds a reduction over every member from each
/// member's `arg`. Every backend computes them through this, in float64, so they agree.
pub fn globals_after_step(
    func: &Func,
    after: &[Value],
    inputs: &HostInputs,
    known: &dyn Fn(Value) -> Option<f64>,
    fold: &dyn Fn(ReduceKind, Value) -> f64,
) -> Result<Vec<(usize, f64)>, InterpError> {
    let mut env: HashMap<Value, f64> = HashMap::new();
    let mut stores = Vec::new();
    for v in after {
        let value = |a: &Value, env: &HashMap<Value, f64>| {
            env.get(a).copied().or_else(|| known(*a)).ok_or_else(|| {
                InterpError::Internal(format!("the global stored after the step reads {a}, which nothing computed"))
            })
        };
        let inst = func.inst(*v);
        if let Op::Store(Target::Global(gi)) = inst.op {
            stores.push((gi, value(&inst.args[0], &env)?));
            continue;
        }
        if let Some(x) = known(*v) {
            env.insert(*v, x);
            continue;
        }
        if let Some(g) = inst.guard {
            if value(&g, &env)? == 0.0 {
                env.insert(*v, f64::NAN);
                continue;
            }
        }
        let x = match inst.op {
            Op::AcrossParams(kind) => fold(kind, inst.args[0]),
            _ => {
                let args = inst.args.iter().map(|a| value(a, &env)).collect::<Result<Vec<_>, _>>()?;
                host_op(&inst.op, &args, inputs)
                    .ok_or_else(|| InterpError::Internal(format!("{v} ({:?}) is not a host scalar", inst.op)))?
            }
        };
        env.insert(*v, x);
    }
    Ok(stores)
}

/// One tensor the engines bind and step: a whole parameter, or one matrix of a parameter
/// bound to `update(p: [..., rows, cols], g)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The parameter's name, or `w[i]` for matrix `i` of a batched `w` (`i` the flat index
    /// over all leading dimensions, row-major).
    pub name: String,
    pub shape: Vec<usize>,
    /// The index of the parameter it belongs to.
    pub param: usize,
    /// Its first element in that parameter, and how many (contiguous) it has.
    pub offset: usize,
    pub len: usize,
}

/// The variant parameter `name` of `shape` and role `role` is stepped by: a policy's first
/// route that admits it picks the optimizer (a file of one optimizer has no routes), then
/// that optimizer's most specific update that fits the rank (rank 3 or more: an `update(p, g)` that
/// keeps per-axis state before the matrix update, which would see the parameter reshaped).
pub fn route(m: &Module, name: &str, shape: &[usize], role: Role) -> Result<usize, InterpError> {
    let owner = if m.routes.is_empty() {
        0
    } else {
        match m.routes.iter().find(|r| r.admits(role, shape.len())) {
            Some(r) => r.optimizer,
            None => {
                return Err(InterpError::NoRoute {
                    policy: m.name.clone(),
                    param: name.to_string(),
                    shape: shape.to_vec(),
                    role: role.name(),
                })
            }
        }
    };
    let find = |p: Pattern| m.variants.iter().position(|v| v.optimizer == owner && v.pattern == p);
    // An `update(p, g)` that keeps per-axis state (`axis_min`, `axis_max`) covers a
    // parameter's real axes, which the matrix update would see reshaped to [rows, cols].
    let per_axis = find(Pattern::Any)
        .filter(|&vi| m.variants[vi].update.insts.iter().any(|i| matches!(i.op, Op::AxisMin | Op::AxisMax)));
    // The most specific update that fits the parameter's rank.
    let variant = match shape.len() {
        0 => find(Pattern::Any),
        1 => find(Pattern::Vector).or_else(|| find(Pattern::Any)),
        2 => find(Pattern::Matrix).or_else(|| find(Pattern::Batched)).or_else(|| find(Pattern::Any)),
        _ => {
            per_axis.or_else(|| find(Pattern::Matrix)).or_else(|| find(Pattern::Batched)).or_else(|| find(Pattern::Any))
        }
    };
    variant.ok_or_else(|| {
        let matrices = find(Pattern::Matrix).or_else(|| find(Pattern::Batched)).is_some();
        let why = if matrices && find(Pattern::Vector).is_none() {
            "it only updates matrices (rank 2 or more); route this parameter to another optimizer"
        } else if find(Pattern::Vector).is_some() && !matrices {
            "it only updates vectors (rank 1); route this parameter to another optimizer"
        } else {
            "it updates only vectors and matrices; route this parameter to another optimizer"
        };
        InterpError::NoVariant {
            optimizer: m.optimizers.get(owner).cloned().unwrap_or_else(|| m.name.clone()),
            param: name.to_string(),
            shape: shape.to_vec(),
            why,
        }
    })
}

/// The members the engines bind for `params` (with `infos[i]` the role and base shape of
/// parameter `i`; missing entries are the default). A parameter routed to an
/// `update(p: [..., rows, cols], g)` of shape `[b1, ..., bk, r, c]` (k >= 1) becomes
/// `b1*...*bk` members `w[0]`, `w[1]`, ... of shape `[r, c]`, the i-th being elements
/// `i*r*c .. (i+1)*r*c` of the row-major buffer: it is stepped exactly as that many separate
/// `[r, c]` parameters, each with its own state, reductions and `rows`/`cols`. Every other
/// parameter (a matrix is a batch of one, so it keeps its name) is one member of its own
/// shape. An empty or unroutable parameter stays whole, so that binding refuses it by its
/// own name.
pub fn members(m: &Module, params: &[(String, Vec<usize>)], infos: &[ParamInfo]) -> Vec<Member> {
    let mut out = Vec::new();
    for (pi, (name, shape)) in params.iter().enumerate() {
        let role = infos.get(pi).map(|i| i.role).unwrap_or_default();
        let batched = route(m, name, shape, role).is_ok_and(|v| m.variants[v].pattern == Pattern::Batched);
        let numel = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        let whole = Member { name: name.clone(), shape: shape.clone(), param: pi, offset: 0, len: numel.unwrap_or(0) };
        match numel {
            Some(n) if batched && shape.len() >= 3 && n > 0 => {
                let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
                let len = r * c;
                out.extend((0..n / len).map(|i| Member {
                    name: format!("{name}[{i}]"),
                    shape: vec![r, c],
                    param: pi,
                    offset: i * len,
                    len,
                }));
            }
            _ => out.push(whole),
        }
    }
    out
}

/// [`bind_with`] for parameters without a role or base shape.
pub fn bind(plan: &Plan, params: &[(String, Vec<usize>)]) -> Result<Vec<BoundParam>, InterpError> {
    bind_with(plan, params, &[])
}

/// Binds parameters by name and shape (and role and base shape, `infos[i]` for parameter
/// `i`) to the plan's update variants: each member (see [`members`]) to the variant
/// [`route`] picks, with every buffer it needs within [`MAX_ELEMENTS`]. Every backend binds
/// through this, so they refuse the same parameters and split batched ones the same way.
pub fn bind_with(
    plan: &Plan,
    params: &[(String, Vec<usize>)],
    infos: &[ParamInfo],
) -> Result<Vec<BoundParam>, InterpError> {
    let m = &plan.module;
    for (i, (name, shape)) in params.iter().enumerate() {
        if shape.len() > MAX_RANK {
            return Err(InterpError::Rank { param: name.clone(), rank: shape.len(), limit: MAX_RANK });
        }
        if let Some(base) = infos.get(i).and_then(|x| x.base_shape.as_ref()) {
            if base.len() != shape.len() || base.contains(&0) {
                return Err(InterpError::BaseShape { param: name.clone(), shape: shape.clone(), base: base.clone() });
            }
        }
    }
    let mut bound = Vec::new();
    for member in members(m, params, infos) {
        let (name, shape) = (&member.name, &member.shape);
        let numel = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
        let info = infos.get(member.param).cloned().unwrap_or_default();
        if numel == 0 && info.shard.is_none() {
            return Err(InterpError::Empty { param: name.clone(), shape: shape.clone() });
        }
        let full_shape = &params[member.param].1;
        let variant = route(m, &params[member.param].0, full_shape, info.role)?;
        let rows = shape.first().copied().unwrap_or(1);
        // The product of the other dimensions (so a shard with no rows keeps its columns).
        let cols = shape.iter().skip(1).product::<usize>();
        // Every buffer of the variant (state and temporaries) must fit before any is made.
        let v = &m.variants[variant];
        let plans = [&plan.variants[variant].init, &plan.variants[variant].update];
        let shapes = m.states.iter().map(|st| (format!("state `{}`", st.name), st.shape.clone())).chain(
            plans
                .iter()
                .flat_map(|fp| fp.temps.iter().enumerate().map(|(t, s)| (format!("temporary t{t}"), s.clone()))),
        );
        for (what, shape_expr) in shapes {
            let shape_expr = if shape_expr == Shape::Like { v.pattern.param_shape() } else { shape_expr };
            let elements: u128 = names_of(&shape_expr)
                .iter()
                .map(|n| match n.as_str() {
                    "rows" => rows as u128,
                    "cols" => cols as u128,
                    _ => numel as u128,
                })
                .product();
            if elements > u128::from(MAX_ELEMENTS) {
                return Err(InterpError::TooLarge {
                    param: name.clone(),
                    shape: shape.clone(),
                    what,
                    elements,
                    limit: MAX_ELEMENTS,
                });
            }
        }
        let batched_member = shape.len() < full_shape.len();
        // A shard's shape scalars are the whole parameter's (a batched parameter's members
        // are whole matrices of the shard's leading dimension).
        let whole = |s: &[usize]| -> Vec<usize> {
            match (info.shard, s.split_first()) {
                (Some(r), Some((_, rest))) => std::iter::once(r).chain(rest.iter().copied()).collect(),
                _ => s.to_vec(),
            }
        };
        let whole_member = if batched_member { shape.clone() } else { whole(shape) };
        let whole_numel = whole_member.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
        let whole_rows = whole_member.first().copied().unwrap_or(1);
        let base = info.base_shape.as_deref().map(|b| if batched_member { &b[b.len() - 2..] } else { b });
        let (width_mult, _) = mup_scalars(&whole_member, base, batched_member);
        let (_, inf_dims) = mup_scalars(&whole(full_shape), info.base_shape.as_deref(), false);
        bound.push(BoundParam {
            name: name.clone(),
            shape: shape.clone(),
            param: member.param,
            offset: member.offset,
            variant,
            rows,
            cols,
            numel,
            whole_rows,
            whole_numel,
            rank: full_shape.len(),
            role: info.role,
            width_mult,
            inf_dims,
            states: vec![None; m.states.len()],
            inputs: vec![None; m.inputs.len()],
        });
    }
    Ok(bound)
}

/// Checks a hyperparameter assignment against its declared type and range; returns the
/// hyperparameter's index.
pub fn check_hyper(m: &Module, name: &str, value: f64) -> Result<usize, InterpError> {
    let Some(i) = m.hypers.iter().position(|h| h.name == name) else {
        let known = m.hypers.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(InterpError::UnknownHyper { name: name.into(), known });
    };
    let h = &m.hypers[i];
    // An optional hyperparameter is unset with NaN (`Optimizer::unset_hyper`).
    if h.optional && value.is_nan() {
        return Ok(i);
    }
    let ok = match h.ty {
        HyperTy::F32 => value.is_finite(),
        HyperTy::Int => value.fract() == 0.0,
        HyperTy::Bool => value == 0.0 || value == 1.0,
        HyperTy::Precision => [F32_BITS, TF32_BITS, BF16_BITS].contains(&value),
    };
    if !ok {
        return Err(InterpError::HyperType { name: name.into(), ty: hyper_ty_name(h.ty), value });
    }
    if let Some((lo, hi)) = h.range {
        if value < lo || value > hi {
            return Err(InterpError::HyperRange { name: name.into(), lo, hi, value });
        }
    }
    Ok(i)
}

/// Checks a step's tensors against the bound members: as many parameters and gradients
/// as bound, each with its member's number of elements (`lens`: parameter, gradient).
pub fn check_step_args(
    bound: &[BoundParam],
    n_params: usize,
    n_grads: usize,
    lens: &[(usize, usize)],
) -> Result<(), InterpError> {
    let named: Vec<(&str, &[usize], usize)> =
        bound.iter().map(|bp| (bp.name.as_str(), bp.shape.as_slice(), bp.numel)).collect();
    check_counts(&named, n_params, n_grads, lens)
}

/// As [`check_step_args`], against the parameters as given (name and shape), before a
/// batched one is split: a wrong length names the parameter the caller passed.
pub fn check_lengths(
    params: &[(String, Vec<usize>)],
    n_params: usize,
    n_grads: usize,
    lens: &[(usize, usize)],
) -> Result<(), InterpError> {
    let named: Vec<(&str, &[usize], usize)> = params
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice(), s.iter().fold(1usize, |a, d| a.saturating_mul(*d))))
        .collect();
    check_counts(&named, n_params, n_grads, lens)
}

fn check_counts(
    expected: &[(&str, &[usize], usize)],
    n_params: usize,
    n_grads: usize,
    lens: &[(usize, usize)],
) -> Result<(), InterpError> {
    if n_params != expected.len() || n_grads != expected.len() {
        let got = if n_params != expected.len() { n_params } else { n_grads };
        return Err(InterpError::Count { what: "tensors", expected: expected.len(), got });
    }
    for ((name, shape, numel), (p, g)) in expected.iter().zip(lens) {
        for (what, len) in [("parameter", *p), ("gradient", *g)] {
            if len != *numel {
                return Err(InterpError::Length {
                    what,
                    param: name.to_string(),
                    shape: shape.to_vec(),
                    expected: *numel,
                    got: len,
                });
            }
        }
    }
    Ok(())
}

/// What a kernel can see besides its own values.
struct Scope<'a> {
    host: &'a HashMap<Value, f64>,
    param: &'a HashMap<Value, f64>,
    slots: &'a HashMap<Value, Tensor>,
    /// [`Interpreter::float32`].
    float32: bool,
}

impl Interpreter {
    /// A scalar computed on the host from constants, hyperparameters, `step`, globals,
    /// `prepare` outputs, shape scalars and earlier host values.
    fn host_scalar(
        &self,
        func: &Func,
        v: Value,
        env: &HashMap<Value, f64>,
        param: Option<&BoundParam>,
    ) -> Result<f64, InterpError> {
        let inst = func.inst(v);
        let args = inst
            .args
            .iter()
            .map(|a| {
                env.get(a)
                    .copied()
                    .ok_or_else(|| InterpError::Internal(format!("host scalar {v} reads {a} before it is computed")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = HostInputs {
            hypers: &self.hypers,
            step: self.step,
            globals: &self.globals,
            prepare_outs: &self.prepare_outs,
            param,
        };
        host_op(&inst.op, &args, &inputs)
            .ok_or_else(|| InterpError::Internal(format!("{v} ({:?}) is not a host scalar", inst.op)))
    }

    /// A function's host scalars for member `bp`: those of the step, then with its own
    /// (shape-dependent) ones added.
    #[allow(clippy::type_complexity)]
    fn scalar_envs(
        &self,
        func: &Func,
        fplan: &FuncPlan,
        bp: &BoundParam,
    ) -> Result<(HashMap<Value, f64>, HashMap<Value, f64>), InterpError> {
        let mut host = HashMap::new();
        for v in &fplan.host {
            let x = self.guarded_host(func, *v, &host, Some(bp))?;
            host.insert(*v, x);
        }
        let mut param = host.clone();
        for v in &fplan.param {
            let x = self.guarded_host(func, *v, &param, Some(bp))?;
            param.insert(*v, x);
        }
        Ok((host, param))
    }

    /// Runs the state initialisers of member `i` on its initial values `p`.
    fn run_init(&mut self, i: usize, p: &mut Vec<f64>) -> Result<(), InterpError> {
        let vi = self.params[i].variant;
        let (func, fplan) = (&self.plan.module.variants[vi].init, &self.plan.variants[vi].init);
        let g: &[f64] = &[];
        let bp = self.params[i].clone();
        let (host, param) = self.scalar_envs(func, fplan, &bp)?;
        let mut buffers =
            Buffers { p, g, states: bp.states.clone(), temps: vec![None; fplan.temps.len()], inputs: Vec::new() };
        let mut slots: HashMap<Value, Tensor> = HashMap::new();
        for item in &fplan.items {
            run_item(&self.plan.module, func, fplan, item, &bp, &mut buffers, &host, &param, &mut slots, self.float32)?;
        }
        self.params[i].states = buffers.states;
        Ok(())
    }

    /// One step of every member, item by item across the members of each variant, in the
    /// order of [`folds::schedule`] (so that a reduction over every parameter,
    /// `AcrossParams`, is folded over every member of every variant between the items that
    /// make its parts and those that read it). Returns the globals the update stores
    /// (global, value).
    fn run_step(
        &mut self,
        mp: &mut [Vec<f64>],
        mg: &[Vec<f64>],
        inputs: &StepInputs<f64>,
    ) -> Result<Vec<(usize, f64)>, InterpError> {
        let n_variants = self.plan.variants.len();
        let active: Vec<usize> = (0..n_variants).filter(|vi| self.params.iter().any(|bp| bp.variant == *vi)).collect();
        let schedule = folds::schedule(&self.plan, &active, false, Pass::Step).map_err(InterpError::Internal)?;
        let mut runs: Vec<Vec<Ctx>> = (0..n_variants).map(|_| Vec::new()).collect();
        for (i, p) in mp.iter_mut().enumerate() {
            let bp = self.params[i].clone();
            let vi = bp.variant;
            let (func, fplan) = (&self.plan.module.variants[vi].update, &self.plan.variants[vi].update);
            let (host, param) = self.scalar_envs(func, fplan, &bp)?;
            let given = inputs.members.get(i).map(Vec::as_slice).unwrap_or_default();
            let inputs = (0..self.plan.module.inputs.len())
                .map(|j| {
                    given.get(j).copied().flatten().map(|g| input_tensor(&self.plan.module.inputs[j].shape, &bp, g))
                })
                .collect();
            let buffers =
                Buffers { p, g: &mg[i], states: bp.states.clone(), temps: vec![None; fplan.temps.len()], inputs };
            runs[vi].push(Ctx { i, bp, host, param, buffers, slots: HashMap::new() });
        }
        for stage in schedule {
            match stage {
                folds::Stage::Items { variant, items } => {
                    let func = &self.plan.module.variants[variant].update;
                    let fplan = &self.plan.variants[variant].update;
                    for (_, item) in fplan.items_of(Pass::Step).filter(|(ii, _)| items.contains(ii)) {
                        for c in runs[variant].iter_mut() {
                            let (bp, buffers, host, param, slots) =
                                (&c.bp, &mut c.buffers, &c.host, &c.param, &mut c.slots);
                            run_item(
                                &self.plan.module,
                                func,
                                fplan,
                                item,
                                bp,
                                buffers,
                                host,
                                param,
                                slots,
                                self.float32,
                            )?;
                        }
                    }
                }
                folds::Stage::Fold { slots } => {
                    let mut total = 0.0f64;
                    for (vi, s) in &slots {
                        for c in &runs[*vi] {
                            // A kernel's reduction, or a scalar the member had before any item.
                            let part = c.slots.get(&s.part).map(Tensor::as_scalar);
                            if let Some(x) =
                                part.or_else(|| c.param.get(&s.part).or_else(|| c.host.get(&s.part)).copied())
                            {
                                total = s.kind.fold(total, x);
                            }
                        }
                    }
                    for (vi, s) in &slots {
                        for c in runs[*vi].iter_mut() {
                            c.param.insert(s.value, total);
                        }
                    }
                }
            }
        }
        let mut stores = Vec::new();
        for &vi in &active {
            let func = &self.plan.module.variants[vi].update;
            let fplan = &self.plan.variants[vi].update;
            let ctxs = &runs[vi];
            if let (false, Some(c)) = (fplan.after.is_empty(), ctxs.first()) {
                let hosts = HostInputs {
                    hypers: &self.hypers,
                    step: self.step,
                    globals: &self.globals,
                    prepare_outs: &self.prepare_outs,
                    param: Some(&c.bp),
                };
                let known = |v: Value| c.param.get(&v).or_else(|| c.host.get(&v)).copied();
                let fold = |kind: ReduceKind, arg: Value| {
                    ctxs.iter().filter_map(|c| c.slots.get(&arg)).fold(0.0, |acc, t| kind.fold(acc, t.as_scalar()))
                };
                stores.extend(globals_after_step(func, &fplan.after, &hosts, &known, &fold)?);
            }
        }
        for c in runs.into_iter().flatten() {
            self.params[c.i].states = c.buffers.states;
        }
        Ok(stores)
    }

    fn guarded_host(
        &self,
        func: &Func,
        v: Value,
        env: &HashMap<Value, f64>,
        p: Option<&BoundParam>,
    ) -> Result<f64, InterpError> {
        if let Some(gv) = func.inst(v).guard {
            if env.get(&gv).copied().unwrap_or(0.0) == 0.0 {
                return Ok(f64::NAN);
            }
        }
        self.host_scalar(func, v, env, p)
    }
}

/// One member's step in progress: its index, binding, host and per-parameter scalars,
/// buffers and the reductions its kernels made.
struct Ctx<'a> {
    i: usize,
    bp: BoundParam,
    host: HashMap<Value, f64>,
    param: HashMap<Value, f64>,
    buffers: Buffers<'a>,
    slots: HashMap<Value, Tensor>,
}

struct Buffers<'a> {
    p: &'a mut Vec<f64>,
    g: &'a [f64],
    states: Vec<Option<Tensor>>,
    temps: Vec<Option<Tensor>>,
    /// The step's inputs, by input (`None`: not given).
    inputs: Vec<Option<Tensor>>,
}

/// An input as a tensor of its declared shape (`like(p)`: the update's parameter shape),
/// its own dimensions sized as given.
fn input_tensor(declared: &Shape, bp: &BoundParam, g: crate::inputs::Given<f64>) -> Tensor {
    match declared {
        Shape::Dims(d) => Tensor { names: d.clone(), sizes: g.shape.to_vec(), data: g.data.to_vec() },
        _ => Tensor { names: vec!["p".into()], sizes: vec![bp.numel], data: g.data.to_vec() },
    }
}

/// The dimension names of a shape (`p` for the parameter's own flattened shape).
pub fn names_of(shape: &Shape) -> Vec<String> {
    match shape {
        Shape::Scalar => vec![],
        Shape::Like => vec!["p".into()],
        Shape::Dims(d) => d.clone(),
    }
}

/// The size of dimension `name` for a bound parameter (`p`: its element count).
pub fn size_of(name: &str, bp: &BoundParam) -> usize {
    match name {
        "rows" => bp.rows,
        "cols" => bp.cols,
        gdc_dsl::builtins::AXES => axis_sizes(&bp.shape).iter().sum(),
        _ => bp.numel,
    }
}

/// The axes per-axis state covers for a member of shape `shape`: its dimensions, or one axis
/// of length 1 for a scalar parameter.
pub fn axis_sizes(shape: &[usize]) -> Vec<usize> {
    if shape.is_empty() {
        vec![1]
    } else {
        shape.to_vec()
    }
}

/// `axis_min(acc)` over a member of shape `dims` (see [`axis_sizes`]): each element the
/// smallest of its indices' entries of `acc`, folded axis after axis by `min` as the backend
/// computes it. The one definition every backend follows: row by row over the last axis, the
/// leading axes' entries folded once per row.
pub fn axis_min<T: Copy>(dims: &[usize], acc: &[T], out: &mut [T], min: impl Fn(T, T) -> T) {
    let dims = axis_sizes(dims);
    let offsets = axis_offsets(&dims);
    let (lead, last) = (dims.len() - 1, dims[dims.len() - 1]);
    let last_acc = &acc[offsets[lead]..offsets[lead] + last];
    let mut index = vec![0usize; lead];
    for row in out.chunks_mut(last.max(1)) {
        match (0..lead).map(|k| acc[offsets[k] + index[k]]).reduce(&min) {
            Some(m) => row.iter_mut().zip(last_acc).for_each(|(o, a)| *o = min(m, *a)),
            None => row.copy_from_slice(last_acc),
        }
        next_index(&mut index, &dims[..lead]);
    }
}

/// `axis_max(x)` over a member of shape `dims`: per axis and index, the largest element of
/// `x` with that index on that axis, by `max` (which propagates NaN); `lowest` starts each
/// entry. Row by row over the last axis: its entries take the row elementwise, the leading
/// axes' entries the row's largest.
pub fn axis_max<T: Copy>(dims: &[usize], x: &[T], out: &mut [T], lowest: T, max: impl Fn(T, T) -> T) {
    let dims = axis_sizes(dims);
    let offsets = axis_offsets(&dims);
    let (lead, last) = (dims.len() - 1, dims[dims.len() - 1]);
    out.iter_mut().for_each(|o| *o = lowest);
    let mut index = vec![0usize; lead];
    for row in x.chunks(last.max(1)) {
        let last_out = &mut out[offsets[lead]..offsets[lead] + last];
        last_out.iter_mut().zip(row).for_each(|(o, v)| *o = max(*o, *v));
        if lead > 0 {
            let m = row.iter().fold(lowest, |a, v| max(a, *v));
            for k in 0..lead {
                let o = &mut out[offsets[k] + index[k]];
                *o = max(*o, m);
            }
        }
        next_index(&mut index, &dims[..lead]);
    }
}

/// Where each axis's entries start in per-axis state: 0, d0, d0 + d1, ...
fn axis_offsets(dims: &[usize]) -> Vec<usize> {
    dims.iter().scan(0, |o, d| Some(std::mem::replace(o, *o + d))).collect()
}

/// The next multi-index over `dims` in row-major order (wrapping to zeros at the end).
fn next_index(index: &mut [usize], dims: &[usize]) {
    for k in (0..dims.len()).rev() {
        index[k] += 1;
        if index[k] < dims[k] {
            return;
        }
        index[k] = 0;
    }
}

/// The number of elements of a value of `shape` for a bound parameter (1 for a scalar).
pub fn elements_of(shape: &Shape, bp: &BoundParam) -> usize {
    names_of(shape).iter().map(|n| size_of(n, bp)).product()
}

fn tensor_for(shape: &Shape, bp: &BoundParam, data: Vec<f64>) -> Tensor {
    let names = names_of(shape);
    let sizes = names.iter().map(|n| size_of(n, bp)).collect();
    Tensor { names, sizes, data }
}

/// Reads a buffer. A temporary that was never written this step (its producer's guard did
/// not hold) reads as absent, which only a `select` that does not pick it may consume.
fn read_buffer(
    m: &Module,
    b: Buffer,
    shape: &Shape,
    bp: &BoundParam,
    bufs: &Buffers,
) -> Result<Option<Tensor>, InterpError> {
    Ok(match b {
        Buffer::Param => Some(tensor_for(shape, bp, bufs.p.clone())),
        Buffer::Grad => Some(tensor_for(shape, bp, bufs.g.to_vec())),
        Buffer::State(s) => Some(bufs.states[s].clone().ok_or_else(|| {
            InterpError::Internal(format!("state `{}` read before it was initialised", m.states[s].name))
        })?),
        Buffer::Temp(t) => bufs.temps[t].clone(),
        Buffer::Input(j) => {
            let given = bufs.inputs.get(j).cloned().flatten().ok_or_else(|| {
                InterpError::Internal(format!("input `{}` is read, but was not given", m.inputs[j].name))
            })?;
            // Shaped as the instruction reads it (`like(p)` of a matrix update: [rows, cols]).
            match shape {
                Shape::Dims(d) if given.names == ["p"] => Some(tensor_for(&Shape::Dims(d.clone()), bp, given.data)),
                _ => Some(given),
            }
        }
    })
}

/// Broadcasts `x` to the shape `names`/`sizes` (an exact copy when they match).
fn expand(x: &Tensor, names: &[String], sizes: &[usize]) -> Vec<f64> {
    let total: usize = sizes.iter().product();
    if x.names == names {
        return x.data.clone();
    }
    if x.names.is_empty() {
        return vec![x.data[0]; total];
    }
    // Each of x's dimensions sits at some position of the result.
    let pos: Vec<usize> = x.names.iter().map(|n| names.iter().position(|r| r == n).unwrap_or(0)).collect();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; sizes.len()];
    for _ in 0..total {
        let mut off = 0;
        for (k, &p) in pos.iter().enumerate() {
            off = off * x.sizes[k] + idx[p];
        }
        out.push(x.data[off]);
        for d in (0..sizes.len()).rev() {
            idx[d] += 1;
            if idx[d] < sizes[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run_item(
    m: &Module,
    func: &Func,
    fplan: &FuncPlan,
    item: &Item,
    bp: &BoundParam,
    bufs: &mut Buffers,
    host: &HashMap<Value, f64>,
    param: &HashMap<Value, f64>,
    slots: &mut HashMap<Value, Tensor>,
    float32: bool,
) -> Result<(), InterpError> {
    let (guard, scalars, inputs) = match item {
        Item::Kernel(k) => (k.guard, &k.scalars, &k.inputs),
        Item::Lib(l) => (l.guard, &l.scalars, &l.inputs),
    };
    let mut env: HashMap<Value, Option<Tensor>> = HashMap::new();
    let scope = Scope { host, param, slots, float32 };
    // Device scalars read only slots, host values and scalar state: they and the guard
    // come first, and a skipped item reads no buffer.
    for v in scalars {
        let x = eval(m, func, *v, bp, bufs, &env, &scope)?;
        env.insert(*v, x);
    }
    if let Some(gv) = guard {
        let g = lookup(func, gv, &env, &scope)?;
        if g.is_none_or(|t| t.as_scalar() == 0.0) {
            return Ok(());
        }
    }
    for (v, b) in inputs {
        let t = read_buffer(m, *b, &func.ty(*v).shape, bp, bufs)?;
        env.insert(*v, t);
    }
    match item {
        Item::Lib(l) => {
            let x = eval(m, func, l.inst, bp, bufs, &env, &scope)?;
            let Buffer::Temp(t) = l.output else {
                return Err(InterpError::Internal("a library call writes a non-temporary".into()));
            };
            bufs.temps[t] = x;
        }
        Item::Kernel(k) => {
            for v in &k.body {
                if matches!(func.inst(*v).op, Op::Store(_)) {
                    continue;
                }
                let x = eval(m, func, *v, bp, bufs, &env, &scope)?;
                env.insert(*v, x);
            }
            let mut new_slots = Vec::new();
            for r in &k.reductions {
                if let Some(Some(t)) = env.get(r) {
                    new_slots.push((*r, t.clone()));
                }
            }
            for out in &k.outputs {
                let (v, b) = (&out.value, &out.buffer);
                if let Some(g) = out.guard {
                    if lookup(func, g, &env, &scope)?.is_none_or(|t| t.as_scalar() == 0.0) {
                        continue;
                    }
                }
                let Some(Some(x)) = env.get(v).cloned().or_else(|| Some(lookup(func, *v, &env, &scope).ok().flatten()))
                else {
                    return Err(InterpError::Internal(format!("kernel k{} writes {v}, which was not computed", k.id)));
                };
                let shape = match b {
                    Buffer::Param | Buffer::Grad | Buffer::Input(_) => Shape::Like,
                    Buffer::State(s) => crate::ir::verify::state_shape(m, *s, &param_shape(m, bp)),
                    Buffer::Temp(t) => fplan.temps[*t].clone(),
                };
                let shape = if matches!(b, Buffer::Param) { param_shape(m, bp) } else { shape };
                let target = tensor_for(&shape, bp, vec![]);
                let data = expand(&x, &target.names, &target.sizes);
                let t = Tensor { data, ..target };
                match b {
                    Buffer::Param => *bufs.p = t.data,
                    Buffer::Grad | Buffer::Input(_) => {
                        return Err(InterpError::Internal("a kernel writes the gradient or an input".into()))
                    }
                    Buffer::State(s) if m.states[*s].bf16 => {
                        let data = t.data.iter().map(|x| f64::from(crate::ir::round_bf16(*x as f32))).collect();
                        bufs.states[*s] = Some(Tensor { data, ..t })
                    }
                    Buffer::State(s) => bufs.states[*s] = Some(t),
                    Buffer::Temp(i) => bufs.temps[*i] = Some(t),
                }
            }
            for (r, t) in new_slots {
                slots.insert(r, t);
            }
        }
    }
    Ok(())
}

fn param_shape(m: &Module, bp: &BoundParam) -> Shape {
    m.variants[bp.variant].pattern.param_shape()
}

/// A value visible to the current kernel: its own, a host or per-parameter scalar, or a
/// reduction slot. `Ok(None)`: computed under a guard that did not hold.
fn lookup(
    func: &Func,
    v: Value,
    env: &HashMap<Value, Option<Tensor>>,
    scope: &Scope,
) -> Result<Option<Tensor>, InterpError> {
    if let Some(x) = env.get(&v) {
        return Ok(x.clone());
    }
    if let Some(x) = scope.param.get(&v).or_else(|| scope.host.get(&v)) {
        return Ok(Some(Tensor::scalar(if scope.float32 { f64::from(*x as f32) } else { *x })));
    }
    if let Some(t) = scope.slots.get(&v) {
        return Ok(Some(t.clone()));
    }
    if matches!(func.inst(v).op, Op::Reduce(..)) {
        // A reduction of an item whose guard did not hold.
        return Ok(None);
    }
    Err(InterpError::Internal(format!("{v} is not available here: the plan did not materialise it")))
}

/// Instruction `v`'s value ([`eval_exact`]), rounded to float32 in a float32 scope.
fn eval(
    m: &Module,
    func: &Func,
    v: Value,
    bp: &BoundParam,
    bufs: &Buffers,
    env: &HashMap<Value, Option<Tensor>>,
    scope: &Scope,
) -> Result<Option<Tensor>, InterpError> {
    let mut x = eval_exact(m, func, v, bp, bufs, env, scope)?;
    if scope.float32 {
        for e in x.iter_mut().flat_map(|t| t.data.iter_mut()) {
            *e = f64::from(*e as f32);
        }
    }
    Ok(x)
}

fn eval_exact(
    m: &Module,
    func: &Func,
    v: Value,
    bp: &BoundParam,
    bufs: &Buffers,
    env: &HashMap<Value, Option<Tensor>>,
    scope: &Scope,
) -> Result<Option<Tensor>, InterpError> {
    let inst = func.inst(v);
    if let Some(g) = inst.guard {
        if lookup(func, g, env, scope)?.is_none_or(|t| t.as_scalar() == 0.0) {
            return Ok(None);
        }
    }
    if let Op::AcrossParams(_) = inst.op {
        // Folded over every member after the item that made the reductions.
        return match scope.param.get(&v) {
            Some(x) => Ok(Some(Tensor::scalar(*x))),
            None => Err(InterpError::Internal(format!("{v} is read before every parameter's reduction ran"))),
        };
    }
    let ty = func.ty(v);
    let out = tensor_for(&ty.shape, bp, vec![]);
    let args: Vec<Option<Tensor>> = match inst.op {
        // A select reads only the side its scalar condition picks.
        Op::Select => {
            let c = lookup(func, inst.args[0], env, scope)?;
            match c {
                Some(c) if c.names.is_empty() => {
                    let pick = if c.as_scalar() != 0.0 { inst.args[1] } else { inst.args[2] };
                    let x = lookup(func, pick, env, scope)?;
                    return Ok(x.map(|x| Tensor { data: expand(&x, &out.names, &out.sizes), ..out }));
                }
                c => {
                    let mut a = vec![c];
                    for x in &inst.args[1..] {
                        a.push(lookup(func, *x, env, scope)?);
                    }
                    a
                }
            }
        }
        _ => inst.args.iter().map(|a| lookup(func, *a, env, scope)).collect::<Result<_, _>>()?,
    };
    if args.iter().any(Option::is_none) {
        return Ok(None);
    }
    let args: Vec<Tensor> = args.into_iter().map(|a| a.expect("checked")).collect();
    let total: usize = out.sizes.iter().product();
    let data = match &inst.op {
        Op::Load(s) => match &bufs.states[*s] {
            Some(t) => t.data.clone(),
            None => return Err(InterpError::Internal(format!("state `{}` is not allocated", m.states[*s].name))),
        },
        Op::Unary(u) => args[0].data.iter().map(|x| eval_unary(*u, *x)).collect(),
        Op::Binary(b) => {
            let x = expand(&args[0], &out.names, &out.sizes);
            let y = expand(&args[1], &out.names, &out.sizes);
            x.iter().zip(&y).map(|(a, c)| eval_binary(*b, *a, *c)).collect()
        }
        Op::Select => {
            let c = expand(&args[0], &out.names, &out.sizes);
            let a = expand(&args[1], &out.names, &out.sizes);
            let b = expand(&args[2], &out.names, &out.sizes);
            (0..total).map(|i| if c[i] != 0.0 { a[i] } else { b[i] }).collect()
        }
        Op::Broadcast => expand(&args[0], &out.names, &out.sizes),
        Op::Eye => {
            let n = out.sizes.first().copied().unwrap_or(0);
            (0..total).map(|i| if i / n.max(1) == i % n.max(1) { 1.0 } else { 0.0 }).collect()
        }
        Op::Reduce(kind, axis) => {
            let x = &args[0];
            let fold = |acc: f64, y: f64| kind.fold(acc, kind.operand(y));
            let zero = kind.identity();
            match axis {
                None => vec![x.data.iter().fold(zero, |a, y| fold(a, *y))],
                Some(ax) => {
                    let (r, c) = (x.sizes[0], x.sizes.get(1).copied().unwrap_or(1));
                    if *ax == 0 {
                        (0..c).map(|j| (0..r).fold(zero, |a, i| fold(a, x.data[i * c + j]))).collect()
                    } else {
                        (0..r).map(|i| x.data[i * c..(i + 1) * c].iter().fold(zero, |a, y| fold(a, *y))).collect()
                    }
                }
            }
        }
        Op::MatMul { ta, tb, .. } => {
            let read = |t: &Tensor, transposed: bool| {
                if !transposed {
                    return t.clone();
                }
                let (r, c) = (t.sizes[0], t.sizes[1]);
                let data = (0..r * c).map(|idx| t.data[(idx % r) * c + idx / r]).collect();
                Tensor { names: vec![t.names[1].clone(), t.names[0].clone()], sizes: vec![c, r], data }
            };
            // A product in bf16 or TF32 multiplies its operands rounded to that precision
            // (through float32, as a backend holds them), exactly, and sums in float64.
            let rounded = |t: Tensor| match args.get(2) {
                Some(p) => {
                    let bits = p.as_scalar();
                    let data = t.data.iter().map(|x| f64::from(round_significand(*x as f32, bits))).collect();
                    Tensor { data, ..t }
                }
                None => t,
            };
            let (a, b) = (&rounded(read(&args[0], *ta)), &rounded(read(&args[1], *tb)));
            let (mm, k) = if a.sizes.len() == 2 { (a.sizes[0], a.sizes[1]) } else { (1, a.sizes[0]) };
            let nn = if b.sizes.len() == 2 { b.sizes[1] } else { 1 };
            let mut o = vec![0.0; mm * nn];
            for i in 0..mm {
                for kk in 0..k {
                    let x = a.data[i * k + kk];
                    for j in 0..nn {
                        o[i * nn + j] += x * b.data[kk * nn + j];
                    }
                }
            }
            o
        }
        Op::Outer => {
            let (a, b) = (&args[0].data, &args[1].data);
            a.iter().flat_map(|x| b.iter().map(move |y| x * y)).collect()
        }
        Op::InvRoot(_, method) => {
            let (m, n, k) = (&args[0].data, args[0].sizes[0], args[1].as_scalar());
            match method {
                RootMethod::Eigh => inv_root(m, n, k),
                RootMethod::Newton => inv_root_newton(m, n, k).unwrap_or_else(|| inv_root(m, n, k)),
            }
        }
        Op::Eigvecs(_) | Op::Eigvals(_) => {
            let n = args[0].sizes[0];
            let (values, vectors) = sorted_eigen(&args[0].data, n);
            if matches!(inst.op, Op::Eigvals(_)) {
                values
            } else {
                vectors
            }
        }
        Op::EigvecsDesc(_) => {
            let n = args[0].sizes[0];
            let (values, vectors) = sorted_eigen(&args[0].data, n);
            permute_columns(&vectors, n, &sort_order(&values))
        }
        Op::Qr(_) => qr(&args[0].data, args[0].sizes[0], args[0].sizes[1]),
        Op::SortPerm => sort_perm(&args[0].data),
        Op::AxisMin => {
            let mut o = vec![0.0; bp.numel];
            axis_min(&bp.shape, &args[0].data, &mut o, |a, b| eval_binary(crate::ir::Binary::Min, a, b));
            o
        }
        Op::AxisMax => {
            let mut o = vec![0.0; size_of(gdc_dsl::builtins::AXES, bp)];
            axis_max(&bp.shape, &args[0].data, &mut o, f64::NEG_INFINITY, |a, b| {
                eval_binary(crate::ir::Binary::Max, a, b)
            });
            o
        }
        Op::Transpose => {
            let (r, c) = (args[0].sizes[0], args[0].sizes[1]);
            (0..r * c).map(|idx| args[0].data[(idx % r) * c + idx / r]).collect()
        }
        Op::Param | Op::Grad => {
            return Err(InterpError::Internal(format!("{v} reads a buffer the kernel did not list")))
        }
        op => return Err(InterpError::Internal(format!("{v} cannot be evaluated in a kernel ({op:?})"))),
    };
    Ok(Some(Tensor { data, ..out }))
}

/// The order of `key` descending, NaN last, ties in index order (a stable sort): what
/// `sort_perm` and `eigvecs.desc` order by.
pub fn sort_order(key: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..key.len()).collect();
    idx.sort_by(|a, b| key[*b].partial_cmp(&key[*a]).unwrap_or_else(|| key[*a].is_nan().cmp(&key[*b].is_nan())));
    idx
}

/// The permutation matrix P (n x n, row-major), P[idx[j], j] = 1, with idx = [`sort_order`].
pub fn sort_perm(key: &[f64]) -> Vec<f64> {
    let n = key.len();
    let mut p = vec![0.0; n * n];
    for (j, i) in sort_order(key).iter().enumerate() {
        p[i * n + j] = 1.0;
    }
    p
}

/// The columns of the row-major n x n matrix `m` in the order `idx`: column j of the result
/// is column idx[j] of `m` (`m @ P` for a permutation matrix P, without the arithmetic).
pub fn permute_columns<T: Copy>(m: &[T], n: usize, idx: &[usize]) -> Vec<T> {
    (0..n * n).map(|e| m[(e / n) * n + idx[e % n]]).collect()
}

/// m^(-1/k) for the symmetric part of the n x n matrix `m`: V diag(f(l)) V^T over its
/// eigenpairs, with f(l) = l^(-1/k) above the rank cutoff n * eps * max(l) and 0 at or below
/// it (the root on m's numerical range, as numpy's `pinv` treats singular values).
pub fn inv_root(m: &[f64], n: usize, k: f64) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(m, n);
    let cutoff = n as f64 * f64::EPSILON * values.iter().fold(0.0f64, |a, l| a.max(*l));
    let f: Vec<f64> = values.iter().map(|l| if *l > cutoff { l.powf(-1.0 / k) } else { 0.0 }).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|e| vectors[i * n + e] * f[e] * vectors[j * n + e]).sum();
        }
    }
    out
}

/// m^(-1/k) for the symmetric part of the n x n matrix `m` by the coupled Newton iteration
/// ([`RootMethod::Newton`]) in float64 with plain loops; `None` where that method falls back
/// to the eigendecomposition.
pub fn inv_root_newton(m: &[f64], n: usize, k: f64) -> Option<Vec<f64>> {
    let power = newton_power(k)?;
    let a: Vec<f64> = (0..n * n).map(|i| 0.5 * (m[i] + m[(i % n) * n + i / n])).collect();
    let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return None;
    }
    let product = |x: &[f64], y: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for e in 0..n {
                let xi = x[i * n + e];
                for j in 0..n {
                    out[i * n + j] += xi * y[e * n + j];
                }
            }
        }
        out
    };
    let eye = |s: f64| -> Vec<f64> { (0..n * n).map(|i| if i / n == i % n { s } else { 0.0 }).collect() };
    let distance = |x: &[f64]| {
        x.iter().enumerate().map(|(i, v)| (v - f64::from(u8::from(i / n == i % n))).abs()).fold(0.0, f64::max)
    };
    let z = (k + 1.0) / (2.0 * norm);
    let mut x = eye(z.powf(1.0 / k));
    let mut mm: Vec<f64> = a.iter().map(|v| z * v).collect();
    let tolerance = RootMethod::newton_tolerance(Precision::F64);
    let mut error = distance(&mm);
    let start = error.max(1.0);
    for _ in 0..RootMethod::NEWTON_MAX_ITERATIONS {
        if error <= tolerance {
            break;
        }
        let p: Vec<f64> = mm.iter().zip(eye(1.0 + 1.0 / k)).map(|(v, d)| d - v / k).collect();
        x = product(&x, &p);
        let mut pk = p.clone();
        for _ in 1..power {
            pk = product(&pk, &p);
        }
        mm = product(&pk, &mm);
        error = distance(&mm);
        if !(error.is_finite() && error <= 2.0 * start) {
            return None;
        }
    }
    if error > tolerance {
        return None;
    }
    Some((0..n * n).map(|i| 0.5 * (x[i] + x[(i % n) * n + i / n])).collect())
}

/// The whole power k of a Newton inverse root, when the method applies to k (1 to 64).
pub fn newton_power(k: f64) -> Option<usize> {
    (k.fract() == 0.0 && (1.0..=64.0).contains(&k)).then_some(k as usize)
}

/// Eigenvalues and eigenvectors (column e of the row-major result) of the symmetric part of
/// an n x n matrix, by cyclic Jacobi rotations in float64: slow, simple and accurate, as an
/// oracle should be.
fn symmetric_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a: Vec<f64> = (0..n * n).map(|i| 0.5 * (m[i] + m[(i % n) * n + i / n])).collect();
    let mut v: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-15 * scale || !off.is_finite() {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                // `signum(0.0)` is 1: a zero angle rotates by 45 degrees, as it should.
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r * n + p], a[r * n + q]);
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p * n + r], a[q * n + r]);
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Eigenvalues ascending and the matching eigenvectors as the columns of a row-major matrix.
pub fn sorted_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let (values, vectors) = symmetric_eigen(m, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let sorted_values = order.iter().map(|e| values[*e]).collect();
    let mut sorted_vectors = vec![0.0; n * n];
    for (j, e) in order.iter().enumerate() {
        for i in 0..n {
            sorted_vectors[i * n + j] = vectors[i * n + e];
        }
    }
    (sorted_values, sorted_vectors)
}

/// The Q of m = Q R for an r x c matrix, by Householder reflections in float64, with each
/// column's sign chosen so that R's diagonal is non-negative. Q has m's shape: orthonormal
/// columns for the first min(r, c), zero columns beyond (a wide matrix has only r).
pub fn qr(m: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut a = m.to_vec();
    let k = r.min(c);
    let mut reflectors: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut signs = vec![1.0; k];
    for j in 0..k {
        let norm = (j..r).map(|i| a[i * c + j].powi(2)).sum::<f64>().sqrt();
        let x0 = a[j * c + j];
        let alpha = if x0 > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (j..r).map(|i| a[i * c + j]).collect();
        v[0] -= alpha;
        let vnorm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if vnorm > 0.0 {
            v.iter_mut().for_each(|x| *x /= vnorm);
            for col in j..c {
                let d: f64 = (j..r).map(|i| v[i - j] * a[i * c + col]).sum();
                for i in j..r {
                    a[i * c + col] -= 2.0 * v[i - j] * d;
                }
            }
        }
        // R[j][j] is now a[j][j]; flip Q's column where it is negative.
        signs[j] = if a[j * c + j] < 0.0 { -1.0 } else { 1.0 };
        reflectors.push(v);
    }
    // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of the identity.
    let mut q = vec![0.0; r * c];
    for j in 0..k {
        q[j * c + j] = 1.0;
    }
    for j in (0..k).rev() {
        let v = &reflectors[j];
        for col in 0..k {
            let d: f64 = (j..r).map(|i| v[i - j] * q[i * c + col]).sum();
            for i in j..r {
                q[i * c + col] -= 2.0 * v[i - j] * d;
            }
        }
    }
    for i in 0..r {
        for (j, s) in signs.iter().enumerate() {
            q[i * c + j] *= s;
        }
    }
    q
}
