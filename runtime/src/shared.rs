//! What the CPU and CUDA engines share: the host's float64 scalar evaluation, which states a
//! variant uses, and the engine-agnostic view of optimizer state that checkpoints read and
//! write.

use crate::RuntimeError;
use gdc_compiler::interp::{self, BoundParam, HostInputs, InterpError};
use gdc_compiler::ir::{Func, Module, Op, Value};
use gdc_compiler::plan::folds;
use gdc_compiler::plan::{Buffer, FuncPlan, Kernel, Pass, Plan};
use rustc_hash::FxHashMap;

pub(crate) fn internal(msg: String) -> RuntimeError {
    RuntimeError::Step(InterpError::Internal(msg))
}

/// Whether a kernel writes the parameter (an initialiser must not).
pub(crate) fn writes_param(k: &Kernel) -> bool {
    k.outputs.iter().any(|o| o.buffer == Buffer::Param)
}

/// Which of a parameter's `[numel, rows, cols]` a dimension name is.
pub(crate) fn size_of(name: &str, sizes: [u64; 3]) -> usize {
    sizes[gdc_compiler::cpu::abi::size_index(name)] as usize
}

/// The sizes a library call's operand of `shape` is given for member `bp`: one per named
/// dimension, except that the parameter's own shape and per-axis state (`[axes]`) give the
/// member's axes (what `axis_min` and `axis_max` need).
pub(crate) fn operand_sizes(shape: &gdc_dsl::types::Shape, bp: &BoundParam) -> Vec<usize> {
    use gdc_dsl::types::Shape;
    match shape {
        Shape::Like => interp::axis_sizes(&bp.shape),
        Shape::Dims(d) if d.len() == 1 && d[0] == gdc_dsl::builtins::AXES => interp::axis_sizes(&bp.shape),
        _ => interp::names_of(shape).iter().map(|n| interp::size_of(n, bp)).collect(),
    }
}

/// Which states a variant's functions touch.
pub(crate) fn state_use(m: &Module, init: &Func, update: &Func) -> Vec<bool> {
    let mut used = vec![false; m.states.len()];
    for f in [init, update] {
        for inst in &f.insts {
            match inst.op {
                Op::Load(s) | Op::Store(gdc_compiler::ir::Target::State(s)) => used[s] = true,
                _ => {}
            }
        }
    }
    used
}

/// Reads element 0 of state `s` of the parameter being evaluated (`None`: not allocated).
pub(crate) type LoadState<'a> = &'a dyn Fn(usize) -> Result<Option<f32>, RuntimeError>;

/// The scalars the host knows during one step of one variant's function: the host phase's,
/// the same for every parameter and computed once; and each member parameter's own
/// (shape-dependent values, reduction results, scalars computed from them). One shared map
/// instead of a copy per parameter, and a fast hash: with 1,000 parameters the per-step
/// bookkeeping was 1.7 ms of hashing and copying on the CPU.
pub(crate) struct Scalars {
    host: FxHashMap<Value, f64>,
    local: Vec<FxHashMap<Value, f64>>,
}

impl Scalars {
    pub fn new(members: usize) -> Scalars {
        Scalars { host: FxHashMap::default(), local: vec![FxHashMap::default(); members] }
    }

    /// The value of `v` for member `mi` (host values are every member's).
    pub fn get(&self, mi: usize, v: Value) -> Option<f64> {
        self.local[mi].get(&v).or_else(|| self.host.get(&v)).copied()
    }

    pub fn set(&mut self, mi: usize, v: Value, x: f64) {
        self.local[mi].insert(v, x);
    }

    pub fn set_host(&mut self, v: Value, x: f64) {
        self.host.insert(v, x);
    }

    /// Whether a guard holds for member `mi` (an unknown guard does not).
    pub fn holds(&self, mi: usize, g: Value) -> bool {
        self.get(mi, g).unwrap_or(0.0) != 0.0
    }
}

/// A host, per-parameter or device scalar for member `mi`: from `env`, or computed from its
/// arguments.
pub(crate) fn scalar(
    m: &Module,
    func: &Func,
    v: Value,
    env: &Scalars,
    mi: usize,
    inputs: &HostInputs,
    load: LoadState,
) -> Result<f64, RuntimeError> {
    if let Some(x) = env.get(mi, v) {
        return Ok(x);
    }
    let inst = func.inst(v);
    if let Some(g) = inst.guard {
        if !env.holds(mi, g) {
            return Ok(f64::NAN);
        }
    }
    match inst.op {
        Op::Load(s) => {
            return load(s)?
                .map(f64::from)
                .ok_or_else(|| internal(format!("scalar state `{}` is not allocated", m.states[s].name)))
        }
        // A reduction whose item's guard did not hold.
        Op::Reduce(..) => return Ok(f64::NAN),
        _ => {}
    }
    let args = inst
        .args
        .iter()
        .map(|a| env.get(mi, *a).ok_or_else(|| internal(format!("scalar {v} reads {a} before it is computed"))))
        .collect::<Result<Vec<_>, _>>()?;
    interp::host_op(&inst.op, &args, inputs).ok_or_else(|| internal(format!("{v} ({:?}) is not a scalar", inst.op)))
}

/// What an engine gives the host's scalar arithmetic: the inputs of host operations and the
/// first element of a parameter's state (for scalar state read on the host).
pub(crate) trait HostSide: StateStore {
    /// Element 0 of state `s` of parameter `i` (`None`: not allocated).
    fn state_element(&self, i: usize, s: usize) -> Result<Option<f32>, RuntimeError>;

    /// What host operations read this step: hyperparameters, step, globals, `prepare`'s
    /// outputs and (for shape scalars) parameter `param`.
    fn host_inputs<'a>(&'a self, param: usize, prepare_outs: &'a [f64]) -> HostInputs<'a> {
        let c = self.counters();
        HostInputs {
            hypers: &c.hypers,
            step: c.step,
            globals: &c.globals,
            prepare_outs,
            param: self.bound().get(param),
        }
    }

    /// Scalar `v` for member `mi` (parameter `i`): known, or computed and remembered.
    fn scalar_for(
        &self,
        func_of: (&Module, &Func),
        v: Value,
        envs: &Scalars,
        (mi, i): (usize, usize),
        prepare_outs: &[f64],
    ) -> Result<f64, RuntimeError> {
        let inputs = self.host_inputs(i, prepare_outs);
        scalar(func_of.0, func_of.1, v, envs, mi, &inputs, &|s| self.state_element(i, s))
    }

    /// The scalars of one function's step for `members` (parameter indices): the host
    /// phase's once, then each member's shape-dependent ones.
    fn prelude(
        &self,
        func_of: (&Module, &Func),
        fplan: &FuncPlan,
        members: &[usize],
        prepare_outs: &[f64],
    ) -> Result<Scalars, RuntimeError> {
        let mut envs = Scalars::new(members.len());
        for v in &fplan.host {
            let x = self.scalar_for(func_of, *v, &envs, (0, members[0]), prepare_outs)?;
            envs.set_host(*v, x);
        }
        for (mi, &i) in members.iter().enumerate() {
            for v in &fplan.param {
                let x = self.scalar_for(func_of, *v, &envs, (mi, i), prepare_outs)?;
                envs.set(mi, *v, x);
            }
        }
        Ok(envs)
    }

    /// The variants of a pass that have members (ascending), and per variant (all of them,
    /// by index) its members and their scalars ([`HostSide::prelude`]; the gradient check
    /// computes what it reads on demand).
    #[allow(clippy::type_complexity)]
    fn variant_runs(
        &self,
        plan: &Plan,
        what: Run,
        prepare_outs: &[f64],
    ) -> Result<(Vec<usize>, Vec<(Vec<usize>, Scalars)>), RuntimeError> {
        let m = &plan.module;
        let active: Vec<usize> =
            (0..plan.variants.len()).filter(|vi| self.bound().iter().any(|bp| bp.variant == *vi)).collect();
        let mut runs = Vec::with_capacity(plan.variants.len());
        for vi in 0..plan.variants.len() {
            let members: Vec<usize> = (0..self.bound().len()).filter(|i| self.bound()[*i].variant == vi).collect();
            let (func, fplan) = match what {
                Run::Init => (&m.variants[vi].init, &plan.variants[vi].init),
                _ => (&m.variants[vi].update, &plan.variants[vi].update),
            };
            let envs = match what {
                _ if members.is_empty() => Scalars::new(0),
                Run::Check => Scalars::new(members.len()),
                _ => self.prelude((m, func), fplan, &members, prepare_outs)?,
            };
            runs.push((members, envs));
        }
        Ok((active, runs))
    }

    /// The globals the update of `members`' variant stores after its step
    /// ([`interp::globals_after_step`]): from the first member's scalars, with reductions
    /// over every parameter folded in member order.
    fn globals_after(
        &self,
        func_of: (&Module, &Func),
        fplan: &FuncPlan,
        members: &[usize],
        envs: &Scalars,
        prepare_outs: &[f64],
    ) -> Result<Vec<(usize, f64)>, RuntimeError> {
        let Some(&first) = members.first() else { return Ok(Vec::new()) };
        if fplan.after.is_empty() {
            return Ok(Vec::new());
        }
        let inputs = self.host_inputs(first, prepare_outs);
        let known = |v: Value| envs.get(0, v);
        let fold = |kind: gdc_compiler::ir::ReduceKind, arg: Value| {
            (0..members.len()).filter_map(|mi| envs.get(mi, arg)).fold(0.0, |acc, x| kind.fold(acc, x))
        };
        Ok(interp::globals_after_step(func_of.1, &fplan.after, &inputs, &known, &fold)?)
    }

    /// Computes an item's own scalars (`scalars`: device scalars from earlier reductions)
    /// for every member and returns the members (`mi`) whose `guard` holds: those the item
    /// runs for.
    fn item_members(
        &self,
        func_of: (&Module, &Func),
        scalars: &[Value],
        guard: Option<Value>,
        members: &[usize],
        envs: &mut Scalars,
        prepare_outs: &[f64],
    ) -> Result<Vec<usize>, RuntimeError> {
        // A reduction over every parameter was folded before (`in_fold_order`).
        let mut run = Vec::with_capacity(members.len());
        for (mi, &i) in members.iter().enumerate() {
            for v in scalars {
                let x = self.scalar_for(func_of, *v, envs, (mi, i), prepare_outs)?;
                envs.set(mi, *v, x);
            }
            if guard.is_none_or(|g| envs.holds(mi, g)) {
                run.push(mi);
            }
        }
        Ok(run)
    }
}

/// Runs a pass in the order of [`folds::schedule`] over the variants with members: `run`
/// gets each stretch of a variant's items (its index, the item range, its members and their
/// scalars); between stretches each fold slot is folded over every member of every variant,
/// variant by variant, each in member order (so the result does not depend on how the work
/// was split), and every member is given the result.
pub(crate) fn in_fold_order(
    plan: &Plan,
    active: &[usize],
    init: bool,
    pass: Pass,
    runs: &mut [(Vec<usize>, Scalars)],
    mut run: impl FnMut(usize, std::ops::Range<usize>, &[usize], &mut Scalars) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    for stage in folds::schedule(plan, active, init, pass).map_err(internal)? {
        match stage {
            folds::Stage::Items { variant, items } => {
                let (members, envs) = &mut runs[variant];
                run(variant, items, members, envs)?;
            }
            folds::Stage::Fold { slots } => {
                let mut total = 0.0f64;
                for (vi, s) in &slots {
                    let (members, envs) = &runs[*vi];
                    total = (0..members.len())
                        .filter_map(|mi| envs.get(mi, s.part))
                        .fold(total, |acc, x| s.kind.fold(acc, x));
                }
                for (vi, s) in &slots {
                    let (members, envs) = &mut runs[*vi];
                    for mi in 0..members.len() {
                        envs.set(mi, s.value, total);
                    }
                }
            }
        }
    }
    Ok(())
}

/// One whole-tensor reduction (a sum or a max-abs) of one bound member, as this process
/// computed it: under distributed training, the part of its shard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Partial {
    /// The member's index among the optimizer's bound members.
    pub member: usize,
    pub kind: gdc_compiler::ir::ReduceKind,
    pub value: f64,
}

/// Combines a reducing kernel's partials in place (an all-reduce across ranks) before
/// anything reads them; see [`crate::Optimizer::step_combined`].
pub type Combine<'a> = &'a mut dyn FnMut(&mut [Partial]) -> Result<(), RuntimeError>;

/// What one pass of an engine over every parameter runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// The state initialisers (the first step only).
    Init,
    /// The update plans' gradient checks alone (`Pass::Check`).
    Check,
    /// The update plans' step items (`Pass::Step`).
    Step,
}

impl Run {
    /// The pass of a function plan this run takes.
    pub fn pass(self) -> Pass {
        if self == Run::Check {
            Pass::Check
        } else {
            Pass::Step
        }
    }
}

/// The members whose gradient check (item `ii` of `fplan`, just run) counted non-finite
/// elements, with the count: both engines read the check's reduction from the scalars.
pub(crate) fn non_finite_after(fplan: &FuncPlan, ii: usize, members: &[usize], envs: &Scalars) -> Vec<(usize, f64)> {
    let Some(c) = fplan.check.filter(|c| c.item == ii) else { return Vec::new() };
    members
        .iter()
        .enumerate()
        .filter_map(|(mi, &i)| match envs.get(mi, c.count) {
            Some(0.0) => None,
            count => Some((i, count.unwrap_or(f64::NAN))),
        })
        .collect()
}

/// What a step did.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    Stepped,
    /// The gradient check found non-finite elements: (member, how many), in binding order.
    /// Nothing was changed: no state, counter or parameter.
    NonFinite(Vec<(usize, f64)>),
}

/// One step as every compiled engine takes it: when `check` is set, the gradient check
/// first (a gradient with a NaN or an infinity stops the step before anything changes);
/// then the initialisers at the first step, the step counted, `prepare` run and its globals
/// stored, the update run. `run(engine, what, prepare's outputs)` runs one pass over every
/// parameter and returns the non-finite counts a check found. A step that fails leaves the
/// counters as they were.
pub(crate) fn counted_step<E: HostSide>(
    engine: &mut E,
    plan: &Plan,
    check: bool,
    mut run: impl FnMut(&mut E, Run, &[f64]) -> Result<Vec<(usize, f64)>, RuntimeError>,
) -> Result<Outcome, RuntimeError> {
    if check {
        let mut bad = run(engine, Run::Check, &[])?;
        if !bad.is_empty() {
            bad.sort_by_key(|(i, _)| *i);
            return Ok(Outcome::NonFinite(bad));
        }
    }
    if !engine.counters().initialised {
        run(engine, Run::Init, &[])?;
        engine.counters_mut().initialised = true;
    }
    let before = engine.counters().clone();
    engine.counters_mut().step += 1;
    let inputs = HostInputs { param: None, ..engine.host_inputs(0, &[]) };
    let (stores, prepare_outs) = match interp::run_prepare(plan, &inputs) {
        Ok(x) => x,
        Err(e) => {
            *engine.counters_mut() = before;
            return Err(e.into());
        }
    };
    for (gi, x) in stores {
        engine.counters_mut().globals[gi] = x;
    }
    if let Err(e) = check_inputs_read(engine, plan, &prepare_outs) {
        *engine.counters_mut() = before;
        return Err(e);
    }
    let result = run(engine, Run::Step, &prepare_outs);
    if result.is_err() {
        *engine.counters_mut() = before;
    }
    result.map(|_| Outcome::Stepped)
}

/// Refuses a step that reads a required input it was not given (the shapes given are in each
/// bound member's `inputs`), before any item runs; see [`gdc_compiler::inputs::read_by`].
pub(crate) fn check_inputs_read<E: HostSide>(
    engine: &E,
    plan: &Plan,
    prepare_outs: &[f64],
) -> Result<(), RuntimeError> {
    let m = &plan.module;
    if m.inputs.is_empty() {
        return Ok(());
    }
    for (i, bp) in engine.bound().iter().enumerate() {
        let (func, fplan) = (&m.variants[bp.variant].update, &plan.variants[bp.variant].update);
        let envs = engine.prelude((m, func), fplan, &[i], prepare_outs)?;
        let read = gdc_compiler::inputs::read_by(fplan, m.inputs.len(), |g| envs.get(0, g).map(|x| x != 0.0));
        gdc_compiler::inputs::missing(m, bp, &read, &bp.inputs, engine.counters().step)?;
    }
    Ok(())
}

/// Which required inputs each bound member's next step reads, computed as that step would
/// (its step number, `prepare`, each member's scalars): what training code must collect for
/// the next step (`Optimizer::inputs_next_step`). Optional inputs are always `false`: they
/// come when the training code chooses.
pub(crate) fn inputs_next_step<E: HostSide>(engine: &mut E, plan: &Plan) -> Result<Vec<Vec<bool>>, RuntimeError> {
    let m = &plan.module;
    let before = engine.counters().clone();
    engine.counters_mut().step += 1;
    let inputs = HostInputs { param: None, ..engine.host_inputs(0, &[]) };
    let result = interp::run_prepare(plan, &inputs).map_err(RuntimeError::from).and_then(|(_, prepare_outs)| {
        let mut out = Vec::new();
        for (i, bp) in engine.bound().iter().enumerate() {
            let (func, fplan) = (&m.variants[bp.variant].update, &plan.variants[bp.variant].update);
            let envs = engine.prelude((m, func), fplan, &[i], &prepare_outs)?;
            let read = gdc_compiler::inputs::read_by(fplan, m.inputs.len(), |g| envs.get(0, g).map(|x| x != 0.0));
            // Optional inputs come when the training code chooses.
            out.push(read.iter().zip(&m.inputs).map(|(r, x)| *r && !x.optional).collect());
        }
        Ok(out)
    });
    *engine.counters_mut() = before;
    result
}

/// The host-side counters every compiled engine keeps.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Counters {
    pub hypers: Vec<f64>,
    pub globals: Vec<f64>,
    pub step: u64,
    /// Whether the state has been initialised (at the first step).
    pub initialised: bool,
}

impl Counters {
    pub fn new(m: &Module) -> Counters {
        Counters {
            hypers: m.hypers.iter().map(|h| h.default).collect(),
            globals: m.globals.iter().map(|g| g.init).collect(),
            step: 0,
            initialised: false,
        }
    }
}

/// An engine's state as checkpoints see it: host copies in, host copies out.
pub(crate) trait StateStore {
    fn bound(&self) -> &[BoundParam];
    fn counters(&self) -> &Counters;
    fn counters_mut(&mut self) -> &mut Counters;
    /// The length of state `s` of parameter `i`, if its variant uses that state.
    fn state_len(&self, i: usize, s: usize) -> Option<usize>;
    /// A host copy of state `s` of parameter `i`, once initialised.
    fn state_copy(&self, i: usize, s: usize) -> Result<Option<Vec<f32>>, RuntimeError>;
    /// Replaces state `s` of parameter `i`; `Ok(false)` if there is no such state or the
    /// length differs.
    fn set_state(&mut self, i: usize, s: usize, data: &[f32]) -> Result<bool, RuntimeError>;
}
