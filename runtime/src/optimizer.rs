//! An optimizer bound to parameters: owns their state and the step counter, checks every
//! call, and runs each step on its backend.

use crate::checkpoint::{self, CheckpointMeta, StateTensor};
use crate::cpu::CpuEngine;
#[cfg(feature = "cuda")]
use crate::cuda::CudaEngine;
use crate::shared::{Combine, Outcome, StateStore};
use crate::{ParamSpec, Program, RuntimeError};
use gdc_compiler::interp::{self, Interpreter, Member};
use gdc_compiler::ir::HyperTy;
use std::path::Path;
use std::sync::Arc;

/// Which backend runs the steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Cranelift machine code over a pool of worker threads, in float32.
    #[default]
    Cpu,
    /// The float64 reference interpreter (exact, slow): for checking.
    Interp,
    /// The reference interpreter with every kernel and library value rounded to float32, as
    /// a float32 backend stores it: the second opinion `verify` asks where a discontinuous
    /// operation (`sign`, a comparison) flips on a value that is zero in float32 and tiny in
    /// float64.
    InterpF32,
    /// The program's PTX on an NVIDIA GPU, in float32 (needs a program loaded from a
    /// `gdc build --target cuda` artifact, and the runtime's `cuda` feature).
    Cuda,
}

/// How an optimizer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    /// Worker threads for the CPU backend (`None`: one per available core).
    pub threads: Option<usize>,
}

/// What a step does when a gradient holds a NaN or an infinity: chosen at run time with
/// [`Optimizer::set_non_finite`], per optimizer (docs/reliability.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Step as written: a NaN flows into the parameters and state as the arithmetic takes
    /// it (PyTorch's behaviour). Costs nothing.
    #[default]
    Propagate,
    /// Leave every parameter, state, global and the step counter untouched and count the
    /// step as skipped ([`Optimizer::skipped_steps`]), as a loss scaler skips overflowed
    /// steps. The gradients are checked before the step: one pass over them.
    SkipStep,
    /// As `SkipStep`, but the step returns [`RuntimeError::NonFiniteGradient`], naming the
    /// first parameter whose gradient holds one, and is not counted as skipped.
    Error,
}

/// The tensors one step hands over besides the gradients, by parameter and input name, each
/// with its shape and row-major data (see [`Optimizer::step_with_inputs`]).
#[derive(Clone, Debug, Default)]
pub struct Inputs<'a> {
    named: Vec<gdc_compiler::inputs::Named<'a, f32>>,
}

impl<'a> Inputs<'a> {
    /// No inputs.
    pub fn new() -> Inputs<'a> {
        Inputs { named: Vec::new() }
    }

    /// Hands input `input` of parameter `param` over with the step.
    pub fn add(&mut self, param: &'a str, input: &'a str, shape: &'a [usize], data: &'a [f32]) -> &mut Self {
        self.named.push((param, input, shape, data));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }
}

enum Engine {
    Cpu(Box<CpuEngine>),
    #[cfg(feature = "cuda")]
    Cuda(Box<CudaEngine>),
    Interp(Box<Interpreter>),
}

/// A compiled optimizer bound to parameters; owns their state and the step counter.
///
/// With `update(p: [..., rows, cols], g)`, a parameter of rank 3 or more is a batch of
/// matrices: it is bound as one member per matrix (`w[0]`, `w[1]`, ...; see
/// [`interp::members`]), each with its own state, and every step hands the engine each
/// member's contiguous sub-slice of the caller's buffers (no copy).
pub struct Optimizer {
    program: Program,
    specs: Vec<ParamSpec>,
    /// What the engine binds: one member per parameter, or per matrix of a batched one.
    members: Vec<Member>,
    engine: Engine,
    non_finite: NonFinite,
    /// Steps skipped for non-finite gradients under [`NonFinite::SkipStep`].
    skipped: u64,
}

impl Optimizer {
    /// Compiles `.gd` source and binds it to `params`, on the default (CPU) backend.
    pub fn from_source(source: &str, params: &[ParamSpec]) -> Result<Optimizer, RuntimeError> {
        Optimizer::new(&Program::compile(source)?, params)
    }

    /// Binds a program to `params`. State is initialised at the first step, from the
    /// parameter values and hyperparameters in force then (`state z = p` copies the
    /// parameter as the first step receives it).
    pub fn new(program: &Program, params: &[ParamSpec]) -> Result<Optimizer, RuntimeError> {
        Optimizer::with_options(program, params, Options::default())
    }

    pub fn with_options(program: &Program, params: &[ParamSpec], options: Options) -> Result<Optimizer, RuntimeError> {
        Optimizer::with_device(program, params, options, 0)
    }

    /// As [`Optimizer::with_options`], on CUDA device `device` (an ordinal, as
    /// `CUDA_VISIBLE_DEVICES` numbers them) when the backend is [`Backend::Cuda`]; other
    /// backends ignore it.
    pub fn with_device(
        program: &Program,
        params: &[ParamSpec],
        options: Options,
        device: usize,
    ) -> Result<Optimizer, RuntimeError> {
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|q| q.name == p.name) {
                return Err(RuntimeError::DuplicateParam(p.name.clone()));
            }
        }
        let bound: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let infos: Vec<interp::ParamInfo> = params
            .iter()
            .map(|p| interp::ParamInfo { role: p.role, base_shape: p.base_shape.clone(), shard: p.shard })
            .collect();
        let members = interp::members(&program.plan().module, &bound, &infos);
        // A member `w[0]` of a batched `w` must not meet a parameter of that name.
        for (i, m) in members.iter().enumerate() {
            if members[..i].iter().any(|q| q.name == m.name) {
                return Err(RuntimeError::DuplicateParam(m.name.clone()));
            }
        }
        let engine = match options.backend {
            Backend::Interp | Backend::InterpF32 => {
                let mut it = Interpreter::new_with(program.plan().clone(), &bound, &infos)?;
                it.float32 = options.backend == Backend::InterpF32;
                Engine::Interp(Box::new(it))
            }
            Backend::Cpu => {
                let threads = match options.threads {
                    Some(0) => return Err(RuntimeError::NoThreads),
                    Some(n) => n,
                    None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                };
                let bound = interp::bind_with(program.plan(), &bound, &infos)?;
                let plan = Arc::clone(&program.inner.plan);
                let code = Arc::clone(&program.inner.cpu);
                Engine::Cpu(Box::new(CpuEngine::new(plan, code, bound, threads)?))
            }
            Backend::Cuda => Optimizer::cuda_engine(program, &bound, &infos, device)?,
        };
        Ok(Optimizer {
            program: program.clone(),
            specs: params.to_vec(),
            members,
            engine,
            non_finite: NonFinite::default(),
            skipped: 0,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_engine(
        program: &Program,
        bound: &[(String, Vec<usize>)],
        infos: &[interp::ParamInfo],
        device: usize,
    ) -> Result<Engine, RuntimeError> {
        let Some(gpu) = program.gpu() else { return Err(RuntimeError::NoGpuCode(program.name().to_string())) };
        let bound = interp::bind_with(program.plan(), bound, infos)?;
        let plan = Arc::clone(&program.inner.plan);
        Ok(Engine::Cuda(Box::new(CudaEngine::new(plan, gpu, bound, device)?)))
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda_engine(
        _: &Program,
        _: &[(String, Vec<usize>)],
        _: &[interp::ParamInfo],
        _: usize,
    ) -> Result<Engine, RuntimeError> {
        Err(RuntimeError::CudaNotBuilt)
    }

    /// The engine's state as checkpoints see it (`None`: the interpreter).
    fn store(&self) -> Option<&dyn StateStore> {
        match &self.engine {
            Engine::Cpu(e) => Some(&**e),
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => Some(&**e),
            Engine::Interp(_) => None,
        }
    }

    fn store_mut(&mut self) -> Option<&mut dyn StateStore> {
        match &mut self.engine {
            Engine::Cpu(e) => Some(&mut **e),
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => Some(&mut **e),
            Engine::Interp(_) => None,
        }
    }

    /// Whether some parameter is bound as several members (a batch of matrices).
    fn batched(&self) -> bool {
        self.members.len() != self.specs.len()
    }

    /// Applies one step: `params[i]` is updated in place from `grads[i]`. A call with the
    /// wrong number of tensors or wrong lengths is refused before anything changes (the
    /// error names the parameter as given, also for a batched one). A gradient holding a NaN
    /// or an infinity is handled as [`Optimizer::set_non_finite`] chose.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<(), RuntimeError> {
        self.step_with_inputs(params, grads, &Inputs::new())
    }

    /// [`Optimizer::step`] with the tensors the program declares as `input`s, by parameter
    /// and input name (K-FAC's activations `a` and output gradients `s`, Sophia-G's `h`).
    /// Each is checked against its declaration (known names, the parameter's `rows`/`cols`,
    /// one size per input dimension such as `batch`, the element count), and a required input
    /// that this step reads but that is missing is refused, all before anything changes.
    /// [`Optimizer::inputs_next_step`] says which inputs the next step reads. Inputs are read
    /// during the step and never kept (a program keeps what it needs in state); the CPU and
    /// interpreter backends take them.
    pub fn step_with_inputs(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        inputs: &Inputs,
    ) -> Result<(), RuntimeError> {
        let check = self.non_finite != NonFinite::Propagate;
        let m = &self.program.plan().module;
        #[cfg(feature = "cuda")]
        if matches!(self.engine, Engine::Cuda(_)) && !m.inputs.is_empty() {
            return Err(RuntimeError::NotOnBackend(
                "per-step inputs (K-FAC, Sophia-G) run on the cpu and interp backends; the CUDA engine does not take them yet",
            ));
        }
        let given = match &self.engine {
            Engine::Cpu(e) => gdc_compiler::inputs::collect(m, e.bound(), &inputs.named)?,
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => gdc_compiler::inputs::collect(m, e.bound(), &inputs.named)?,
            Engine::Interp(it) => gdc_compiler::inputs::collect(m, &it.params, &inputs.named)?,
        };
        if self.batched() && !matches!(self.engine, Engine::Interp(_)) {
            let lens: Vec<(usize, usize)> = params.iter().zip(grads).map(|(p, g)| (p.len(), g.len())).collect();
            let named: Vec<(String, Vec<usize>)> =
                self.specs.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
            interp::check_lengths(&named, params.len(), grads.len(), &lens)?;
            let mut mp = split_mut(&self.members, params);
            let mg = split(&self.members, grads);
            let outcome = match &mut self.engine {
                Engine::Cpu(e) => e.step(&mut mp, &mg, check, None, &given)?,
                #[cfg(feature = "cuda")]
                Engine::Cuda(e) => e.step(&mut mp, &mg, check)?,
                Engine::Interp(_) => unreachable!("the interpreter splits batched parameters itself"),
            };
            return self.settle(outcome);
        }
        let outcome = match &mut self.engine {
            Engine::Cpu(e) => e.step(params, grads, check, None, &given)?,
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => e.step(params, grads, check)?,
            Engine::Interp(it) => {
                let mut values: Vec<Vec<f64>> =
                    params.iter().map(|p| p.iter().map(|x| f64::from(*x)).collect()).collect();
                let grads: Vec<Vec<f64>> = grads.iter().map(|g| g.iter().map(|x| f64::from(*x)).collect()).collect();
                let bad = if check { it.check_gradients(&grads)? } else { Vec::new() };
                if bad.is_empty() {
                    // The interpreter's inputs, widened to float64.
                    let wide: Vec<Vec<Option<Vec<f64>>>> = given
                        .members
                        .iter()
                        .map(|row| {
                            row.iter().map(|g| g.map(|g| g.data.iter().map(|x| f64::from(*x)).collect())).collect()
                        })
                        .collect();
                    let members = given
                        .members
                        .iter()
                        .zip(&wide)
                        .map(|(row, w)| {
                            row.iter()
                                .zip(w)
                                .map(|(g, d)| {
                                    g.zip(d.as_deref())
                                        .map(|(g, data)| gdc_compiler::inputs::Given { shape: g.shape, data })
                                })
                                .collect()
                        })
                        .collect();
                    it.step_with_inputs(&mut values, &grads, &gdc_compiler::inputs::StepInputs { members })?;
                    for (p, v) in params.iter_mut().zip(&values) {
                        for (x, y) in p.iter_mut().zip(v) {
                            *x = *y as f32;
                        }
                    }
                    Outcome::Stepped
                } else {
                    Outcome::NonFinite(bad)
                }
            }
        };
        self.settle(outcome)
    }

    /// As [`Optimizer::step`], with the whole-tensor reductions of every kernel that reduces
    /// (a norm, a max-abs, `global_norm`'s parts) handed to `combine` before anything reads
    /// them: distributed training binds each parameter's local shard
    /// ([`ParamSpec::as_shard`], possibly empty), every rank the same parameters in the same
    /// order, and `combine` all-reduces the partials (sums added, max-abs maxima taken), so
    /// every rank steps its shard as the whole parameter's step would (up to float64 rounding
    /// of the combination). `combine` is called once per reducing kernel in plan order, also
    /// with no partials when the kernel runs for no member here, so every rank makes the same
    /// calls. Only parameters of [`crate::Locality::Elementwise`] or
    /// [`crate::Locality::Reduces`] can be stepped this way, on the CPU backend; a step whose
    /// `combine` fails returns its error with the step counter unchanged.
    pub fn step_combined(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        combine: Combine,
    ) -> Result<(), RuntimeError> {
        if self.batched() {
            return Err(RuntimeError::Combine("a batch of matrices is stepped only whole".into()));
        }
        let Engine::Cpu(e) = &self.engine else {
            return Err(RuntimeError::Combine("only the CPU backend combines reductions".into()));
        };
        // Once per variant bound (a few), not per parameter: this runs every step.
        let plan = self.program.plan();
        let mut seen = Vec::new();
        for bp in e.bound() {
            if seen.contains(&bp.variant) {
                continue;
            }
            seen.push(bp.variant);
            if gdc_compiler::plan::locality::locality(plan, bp.variant) == crate::Locality::Whole {
                return Err(RuntimeError::Combine(format!(
                    "the program steps `{}` only whole (matrix products, reductions along an axis, or its row count)",
                    bp.name
                )));
            }
        }
        let check = self.non_finite != NonFinite::Propagate;
        let none = gdc_compiler::inputs::StepInputs::none(self.members.len(), plan.module.inputs.len());
        let outcome = match &mut self.engine {
            Engine::Cpu(e) => e.step(params, grads, check, Some(combine), &none)?,
            _ => return Err(RuntimeError::Combine("only the CPU backend combines reductions".into())),
        };
        self.settle(outcome)
    }

    /// Which inputs the next step reads, per parameter: `(parameter, input)` pairs the
    /// training code must hand to [`Optimizer::step_with_inputs`] (K-FAC's `a` and `s` only on
    /// the steps that average its factors, so hooks that collect them cost nothing on the
    /// others). Optional inputs are never listed: they come when the training code chooses.
    pub fn inputs_next_step(&mut self) -> Result<Vec<(String, String)>, RuntimeError> {
        if self.program.plan().module.inputs.is_empty() {
            return Ok(Vec::new());
        }
        let read = match &mut self.engine {
            Engine::Cpu(e) => e.inputs_next_step()?,
            #[cfg(feature = "cuda")]
            Engine::Cuda(_) => return Ok(Vec::new()),
            Engine::Interp(it) => it.inputs_next_step()?,
        };
        let m = &self.program.plan().module;
        let mut out = Vec::new();
        for (member, read) in self.members.iter().zip(read) {
            for (j, r) in read.iter().enumerate() {
                if *r && !m.inputs[j].optional {
                    out.push((member.name.clone(), m.inputs[j].name.clone()));
                }
            }
        }
        Ok(out)
    }

    /// The state each bound member's variant allocates: (member name, state name, shape),
    /// known before the first step (the values are set then).
    pub fn state_layout(&self) -> Result<Vec<(String, String, Vec<usize>)>, RuntimeError> {
        let Some(e) = self.store() else { return Err(RuntimeError::Unsupported("checkpointing")) };
        let m = &self.program.plan().module;
        let mut out = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            for (s, st) in m.states.iter().enumerate() {
                if e.state_len(i, s).is_some() {
                    let shape = checkpoint::state_shape(&st.shape, &member.shape, &e.bound()[i]);
                    out.push((member.name.clone(), st.name.clone(), shape));
                }
            }
        }
        Ok(out)
    }

    /// What a step's outcome means under the non-finite policy.
    fn settle(&mut self, outcome: Outcome) -> Result<(), RuntimeError> {
        let Outcome::NonFinite(bad) = outcome else { return Ok(()) };
        match self.non_finite {
            NonFinite::SkipStep => {
                self.skipped += 1;
                Ok(())
            }
            _ => {
                let (member, count) = bad[0];
                let param = self.specs[self.members[member].param].name.clone();
                let total: f64 = bad.iter().map(|(_, c)| c).sum();
                let others = bad.iter().map(|(m, _)| self.members[*m].param).filter(|p| self.specs[*p].name != param);
                let mut names: Vec<&str> = others.map(|p| self.specs[p].name.as_str()).collect();
                names.dedup();
                Err(RuntimeError::NonFiniteGradient {
                    param,
                    count: count as u64,
                    total: total as u64,
                    others: names.len(),
                    step: self.step_count() + 1,
                })
            }
        }
    }

    /// Chooses what a step does with a gradient that holds a NaN or an infinity (default
    /// [`NonFinite::Propagate`]). It may change between steps.
    pub fn set_non_finite(&mut self, policy: NonFinite) {
        self.non_finite = policy;
    }

    pub fn non_finite(&self) -> NonFinite {
        self.non_finite
    }

    /// Steps skipped so far because a gradient held a NaN or an infinity
    /// ([`NonFinite::SkipStep`]); [`Optimizer::step_count`] does not count them.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// Applies one step to parameters and gradients in device memory (cuda backend only):
    /// `params[i]` is updated in place from `grads[i]`, with the same checks as
    /// [`Optimizer::step`]. The buffers must belong to the optimizer's CUDA context
    /// (allocate them on [`Optimizer::cuda_stream`]); work queued on their streams is waited
    /// for, and the step has completed on the device when this returns.
    #[cfg(feature = "cuda")]
    pub fn step_device(
        &mut self,
        params: &mut [&mut cudarc::driver::CudaSlice<f32>],
        grads: &[&cudarc::driver::CudaSlice<f32>],
    ) -> Result<(), RuntimeError> {
        if let Some(m) = self.members.iter().find(|m| m.name != self.specs[m.param].name) {
            return Err(RuntimeError::BatchedDevice(self.specs[m.param].name.clone()));
        }
        let check = self.non_finite != NonFinite::Propagate;
        let outcome = match &mut self.engine {
            Engine::Cuda(e) => e.step_device(params, grads, check)?,
            _ => return Err(RuntimeError::NeedsCuda("stepping device buffers")),
        };
        self.settle(outcome)
    }

    /// The CUDA stream the optimizer runs on (cuda backend only), so training code can
    /// allocate its buffers in the same context.
    #[cfg(feature = "cuda")]
    pub fn cuda_stream(&self) -> Option<std::sync::Arc<cudarc::driver::CudaStream>> {
        match &self.engine {
            Engine::Cuda(e) => Some(e.stream()),
            _ => None,
        }
    }

    /// Sets a hyperparameter by name, checked against its declared type and range; it takes
    /// effect at the next step, without recompiling.
    pub fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), RuntimeError> {
        let i = interp::check_hyper(&self.program.plan().module, name, value)?;
        self.hyper_values_mut()[i] = value;
        Ok(())
    }

    /// Unsets an optional hyperparameter (`optional hyper h`): `present(h)` is false, and the
    /// statements it guards are skipped, until it is set again. The value is NaN while unset.
    pub fn unset_hyper(&mut self, name: &str) -> Result<(), RuntimeError> {
        let m = &self.program.plan().module;
        if m.hypers.iter().any(|h| h.name == name && !h.optional) {
            return Err(interp::InterpError::NotOptional { name: name.into() }.into());
        }
        self.set_hyper(name, f64::NAN)
    }

    fn hyper_values(&self) -> &[f64] {
        match &self.engine {
            Engine::Cpu(e) => &e.counters.hypers,
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => &e.counters.hypers,
            Engine::Interp(it) => &it.hypers,
        }
    }

    fn hyper_values_mut(&mut self) -> &mut Vec<f64> {
        match &mut self.engine {
            Engine::Cpu(e) => &mut e.counters.hypers,
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => &mut e.counters.hypers,
            Engine::Interp(it) => &mut it.hypers,
        }
    }

    /// A hyperparameter's current value (booleans as 0 or 1), or `None` if there is none.
    pub fn hyper(&self, name: &str) -> Option<f64> {
        let i = self.program.plan().module.hypers.iter().position(|h| h.name == name)?;
        Some(self.hyper_values()[i])
    }

    /// A global's current value (Prodigy's step size estimate `d`, for a training log), or
    /// `None` if the program declares no global of that name.
    pub fn global(&self, name: &str) -> Option<f64> {
        let i = self.program.plan().module.globals.iter().position(|g| g.name == name)?;
        match (&self.engine, self.store()) {
            (Engine::Interp(it), _) => it.globals.get(i).copied(),
            (_, Some(e)) => e.counters().globals.get(i).copied(),
            (_, None) => None,
        }
    }

    /// The hyperparameters: name, type and current value.
    pub fn hypers(&self) -> Vec<(String, HyperTy, f64)> {
        self.program
            .plan()
            .module
            .hypers
            .iter()
            .zip(self.hyper_values())
            .map(|(h, v)| (h.name.clone(), h.ty, *v))
            .collect()
    }

    /// Floating-point operations the CPU backend's matrix library calls (products,
    /// decompositions) have executed since this optimizer was made, counted as
    /// `linalg::run` counts them (a Newton inverse root by its iterations); `None` on the other
    /// backends. Benchmarks divide it by time.
    pub fn matrix_flops(&self) -> Option<u64> {
        match &self.engine {
            Engine::Cpu(e) => Some(e.matrix_flops.load(std::sync::atomic::Ordering::Relaxed)),
            _ => None,
        }
    }

    /// Applies one step to parameters stored as bfloat16 (`params[i]` holds bf16 bit
    /// patterns; gradients are float32): each parameter is widened to float32, stepped as
    /// [`Optimizer::step`] steps it, and rounded back **stochastically**, up or down with the
    /// probabilities that make the rounding unbiased, so updates far below a bfloat16 step
    /// still move the weights on average. The rounding noise is a hash of the step number,
    /// the parameter's index and the element's: a run is reproducible. Errors are
    /// [`Optimizer::step`]'s, before anything changes. (The widening and the rounding are
    /// passes of their own on the host, not fused into the kernels.)
    pub fn step_bf16(&mut self, params: &mut [&mut [u16]], grads: &[&[f32]]) -> Result<(), RuntimeError> {
        let mut wide: Vec<Vec<f32>> =
            params.iter().map(|p| p.iter().map(|b| gdc_compiler::ir::bf16_value(*b)).collect()).collect();
        let mut views: Vec<&mut [f32]> = wide.iter_mut().map(|w| w.as_mut_slice()).collect();
        let skipped = self.skipped;
        self.step(&mut views, grads)?;
        if self.skipped != skipped {
            return Ok(());
        }
        let step = self.step_count();
        for (pi, (p, w)) in params.iter_mut().zip(&wide).enumerate() {
            for (j, (b, x)) in p.iter_mut().zip(w).enumerate() {
                *b = stochastic_bf16(*x, noise_bits(step, pi as u64, j as u64));
            }
        }
        Ok(())
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        match &self.engine {
            Engine::Cpu(e) => e.counters.step,
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => e.counters.step,
            Engine::Interp(it) => it.step,
        }
    }

    pub fn params(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// What the engine binds, in order: each parameter, or each matrix `w[i]` of a parameter
    /// batched by `update(p: [..., rows, cols], g)`, with where its elements lie in the
    /// parameter. Checkpoints and [`Optimizer::state`] know state by these names.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// A copy of state `name` of parameter `param`, as float32 (`None` before the first
    /// step, or if the parameter has no such state; on the cuda backend, also if the copy
    /// from the device fails). `param` may name a member of a batched parameter (`w[3]`: that
    /// matrix's state) or the batched parameter itself (`w`: its matrices' states one after
    /// the other, so state shaped like the parameter comes back in the parameter's layout).
    pub fn state(&self, param: &str, name: &str) -> Option<Vec<f32>> {
        let s = self.program.plan().module.states.iter().position(|st| st.name == name)?;
        let chosen: Vec<usize> = match self.members.iter().position(|m| m.name == param) {
            Some(i) => vec![i],
            None => {
                let p = self.specs.iter().position(|p| p.name == param)?;
                (0..self.members.len()).filter(|i| self.members[*i].param == p).collect()
            }
        };
        let mut out = Vec::new();
        for i in chosen {
            let part = match (&self.engine, self.store()) {
                (Engine::Interp(it), _) => it.state(i, name)?.data.iter().map(|x| *x as f32).collect(),
                (_, Some(e)) => e.state_copy(i, s).ok().flatten()?,
                (_, None) => return None,
            };
            out.extend(part);
        }
        Some(out)
    }

    /// Swaps state `name` (shaped like the parameter: an EMA of the weights, say) with the
    /// parameters' values, for every parameter that has it: evaluate with the average
    /// swapped in, then swap again to resume training where it was. `params` are the
    /// parameters in binding order, as `step` takes them. Errors, before anything changes:
    /// a backend without state access (interp), an unknown state or one not shaped like the
    /// parameter, no step taken yet, wrong counts or lengths.
    pub fn swap_state(&mut self, name: &str, params: &mut [&mut [f32]]) -> Result<(), RuntimeError> {
        let bad = |why: &str| RuntimeError::SwapState { name: name.to_string(), why: why.to_string() };
        let m = &self.program.plan().module;
        let Some(s) = m.states.iter().position(|st| st.name == name) else {
            let known = m.states.iter().map(|st| st.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(bad(&format!("the optimizer has no such state (its states: {known})")));
        };
        if m.states[s].shape != gdc_dsl::types::Shape::Like {
            return Err(bad("it is not shaped like the parameter"));
        }
        let inputs: Vec<(String, Vec<usize>)> = self.specs.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let lens: Vec<(usize, usize)> = params.iter().map(|p| (p.len(), p.len())).collect();
        interp::check_lengths(&inputs, params.len(), params.len(), &lens)?;
        let members = self.members.clone();
        let Some(e) = self.store_mut() else { return Err(RuntimeError::Unsupported("swap_state")) };
        if !e.counters().initialised {
            return Err(bad("no step has run yet, so it holds nothing"));
        }
        let mut copies = Vec::new();
        for (i, mb) in members.iter().enumerate() {
            if let Some(data) = e.state_copy(i, s)? {
                copies.push((i, mb.param, mb.offset, data));
            }
        }
        if copies.is_empty() {
            return Err(bad("no parameter's update uses it"));
        }
        for (i, p, offset, data) in copies {
            let part = &mut params[p][offset..offset + data.len()];
            e.set_state(i, s, part)?;
            part.copy_from_slice(&data);
        }
        Ok(())
    }

    /// Saves the state of every parameter, the step count, the hyperparameters and globals
    /// (both by name) as safetensors at `path`, keyed by member name (the parameter's, or
    /// `w[3]` for a matrix of a batched `w`: see [`Optimizer::members`]), with the program's
    /// hash. The write is atomic: an interrupted save leaves the previous file in place.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), RuntimeError> {
        let (meta, tensors) = self.snapshot()?;
        Ok(checkpoint::save(path.as_ref(), &meta, &tensors)?)
    }

    /// Everything a checkpoint holds, in memory: the metadata (program hash, parameters, step
    /// and skipped-step counts, hyperparameters and globals by name) and a copy of every
    /// state tensor, keyed by member. [`Optimizer::restore`] takes it back; bindings such as
    /// the Python package's `state_dict` are built on the pair.
    pub fn snapshot(&self) -> Result<(CheckpointMeta, Vec<StateTensor>), RuntimeError> {
        let Some(e) = self.store() else { return Err(RuntimeError::Unsupported("checkpointing")) };
        let m = &self.program.plan().module;
        let mut tensors = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            for (s, st) in m.states.iter().enumerate() {
                if let Some(data) = e.state_copy(i, s)? {
                    // `like(p)` state has the member's shape; other state its declared one.
                    let shape = checkpoint::state_shape(&st.shape, &member.shape, &e.bound()[i]);
                    tensors.push(StateTensor { param: member.name.clone(), state: st.name.clone(), shape, data });
                }
            }
        }
        let globals = m.globals.iter().zip(&e.counters().globals).map(|(g, v)| (g.name.clone(), *v)).collect();
        let meta = CheckpointMeta {
            program_hash: self.program.hash().to_string(),
            optimizer: self.program.name().to_string(),
            params: self.specs.iter().map(|p| (p.name.clone(), p.shape.clone())).collect(),
            step: e.counters().step,
            skipped_steps: self.skipped,
            hypers: m.hypers.iter().zip(&e.counters().hypers).map(|(h, v)| (h.name.clone(), *v)).collect(),
            globals: checkpoint::Globals::Named(globals),
        };
        Ok((meta, tensors))
    }

    /// Restores a checkpoint saved by [`Optimizer::save_checkpoint`] for the same parameters
    /// (by name; their order may differ), from this program or an edited one, by the
    /// migration rule of docs/checkpoints.md:
    ///
    /// - every state this program uses for a parameter must be in the file under the same
    ///   `param/state` key with the shape this program gives it (unless the file was saved
    ///   at step 0), and keeps its values; the file may hold no state this program does not
    ///   use for that parameter;
    /// - saved hyperparameters and globals must be declared, and are restored (with the
    ///   usual type and range checks); a hyperparameter the file lacks keeps its value here
    ///   (its default unless set), a global the file lacks starts at its initial value.
    ///
    /// A `gdc-checkpoint-1` file (positional globals) loads only into the program that wrote
    /// it. Everything is checked before anything changes: on an error the optimizer is as it
    /// was.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), RuntimeError> {
        let path = path.as_ref();
        let (meta, tensors) = checkpoint::load(path)?;
        self.restore(path, meta, &tensors)
    }

    /// Restores what [`Optimizer::snapshot`] took (or a checkpoint file held), by the rules
    /// of [`Optimizer::load_checkpoint`]; `origin` names where it came from in errors (a
    /// file's path, or `<state_dict>`). Everything is checked before anything changes.
    pub fn restore(
        &mut self,
        origin: &Path,
        meta: CheckpointMeta,
        tensors: &[StateTensor],
    ) -> Result<(), RuntimeError> {
        use checkpoint::{CheckpointError, Globals, Migration};
        let path = origin;
        let params: Vec<(String, Vec<usize>)> = self.specs.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        match meta.globals {
            // Format 1: positional globals mean nothing to another program.
            Globals::Positional(_) => {
                checkpoint::check_compatible(&meta, self.program.hash(), self.program.name(), &params)?
            }
            Globals::Named(_) => checkpoint::check_params(&meta, &params)?,
        }
        let program = self.program.clone();
        let m = &program.plan().module;
        let bad = |what: String| RuntimeError::CheckpointState { path: path.display().to_string(), what };
        let refuse = |mismatch: Migration| -> RuntimeError {
            RuntimeError::Checkpoint(CheckpointError::Migration {
                path: path.to_path_buf(),
                saved_optimizer: meta.optimizer.clone(),
                optimizer: program.name().to_string(),
                mismatch: Box::new(mismatch),
            })
        };
        let members = self.members.clone();
        let Some(e) = self.store_mut() else { return Err(RuntimeError::Unsupported("checkpointing")) };

        // Every state each member uses must be there, in the shape it has here, once a step
        // ran; and nothing else may be.
        let saved: std::collections::HashMap<(&str, &str), &StateTensor> =
            tensors.iter().map(|t| ((t.param.as_str(), t.state.as_str()), t)).collect();
        let mut used = std::collections::HashSet::new();
        let mut updates = Vec::new();
        for (i, member) in members.iter().enumerate() {
            for (s, st) in m.states.iter().enumerate() {
                let Some(len) = e.state_len(i, s) else { continue };
                used.insert((member.name.as_str(), st.name.as_str()));
                let Some(t) = saved.get(&(member.name.as_str(), st.name.as_str())) else {
                    if meta.step == 0 {
                        continue;
                    }
                    let held = tensors.iter().filter(|t| t.param == member.name).map(|t| t.state.clone()).collect();
                    return Err(refuse(Migration::MissingState {
                        param: member.name.clone(),
                        state: st.name.clone(),
                        saved: held,
                    }));
                };
                let shape = checkpoint::state_shape(&st.shape, &member.shape, &e.bound()[i]);
                if t.shape != shape {
                    return Err(refuse(Migration::StateShape {
                        param: member.name.clone(),
                        state: st.name.clone(),
                        checkpoint: t.shape.clone(),
                        program: shape,
                    }));
                }
                if t.data.len() != len {
                    return Err(bad(format!(
                        "state `{}` of parameter `{}` has {} values, the optimizer needs {len}",
                        st.name,
                        member.name,
                        t.data.len()
                    )));
                }
                updates.push((i, s, &t.data));
            }
        }
        if let Some(t) = tensors.iter().find(|t| !used.contains(&(t.param.as_str(), t.state.as_str()))) {
            return Err(refuse(Migration::UnusedState { param: t.param.clone(), state: t.state.clone() }));
        }

        // Hyperparameters by name; one the file lacks keeps its value.
        let mut hypers = e.counters().hypers.clone();
        for (name, value) in &meta.hypers {
            if !m.hypers.iter().any(|h| &h.name == name) {
                return Err(refuse(Migration::UnknownHyper { name: name.clone() }));
            }
            let i = interp::check_hyper(m, name, *value).map_err(|err| bad(err.to_string()))?;
            hypers[i] = *value;
        }

        // Globals by name (format 2; one the file lacks starts at its initial value), or by
        // position from a format-1 file of this very program.
        let nglobals = e.counters().globals.len();
        let globals = match &meta.globals {
            Globals::Positional(saved) if saved.len() != nglobals => {
                return Err(bad(format!("it has {} globals, the program {nglobals}", saved.len())));
            }
            Globals::Positional(saved) => saved.clone(),
            Globals::Named(saved) => {
                let mut globals: Vec<f64> = m.globals.iter().map(|g| g.init).collect();
                for (name, value) in saved {
                    let Some(k) = m.globals.iter().position(|g| &g.name == name) else {
                        return Err(refuse(Migration::UnknownGlobal { name: name.clone() }));
                    };
                    globals[k] = *value;
                }
                globals
            }
        };

        // Lengths were checked above, so only a device copy can fail here.
        for (i, s, data) in updates {
            e.set_state(i, s, data)?;
        }
        let c = e.counters_mut();
        c.hypers = hypers;
        c.globals = globals;
        c.step = meta.step;
        c.initialised = meta.step > 0;
        self.skipped = meta.skipped_steps;
        Ok(())
    }
}

/// `x` rounded to a neighbouring bfloat16 at random: `noise`'s low 16 bits are added below
/// the kept bits before truncating, so `x` rounds up with probability (its distance from the
/// lower neighbour) / (the gap). NaN becomes the quiet NaN; infinities stay.
pub fn stochastic_bf16(x: f32, noise: u32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    if x.is_infinite() {
        return (x.to_bits() >> 16) as u16;
    }
    (x.to_bits().wrapping_add(noise & 0xFFFF) >> 16) as u16
}

/// A 32-bit hash of (step, parameter, element): splitmix64's finaliser.
fn noise_bits(step: u64, param: u64, element: u64) -> u32 {
    let mut z = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ param.rotate_left(40) ^ element;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// Each member's part of the caller's parameters: a whole slice, or the consecutive
/// `len`-element chunks of a batched parameter (members of one parameter are adjacent and in
/// order; lengths were checked).
fn split_mut<'a>(members: &[Member], params: &'a mut [&mut [f32]]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(members.len());
    let mut k = 0;
    for (i, p) in params.iter_mut().enumerate() {
        let n = members[k..].iter().take_while(|m| m.param == i).count();
        if n == 1 {
            out.push(&mut **p);
        } else {
            out.extend(p.chunks_mut(members[k].len));
        }
        k += n;
    }
    out
}

/// [`split_mut`] for the gradients.
fn split<'a>(members: &[Member], grads: &[&'a [f32]]) -> Vec<&'a [f32]> {
    let mut out = Vec::with_capacity(members.len());
    let mut k = 0;
    for (i, g) in grads.iter().enumerate() {
        let n = members[k..].iter().take_while(|m| m.param == i).count();
        if n == 1 {
            out.push(*g);
        } else {
            out.extend(g.chunks(members[k].len));
        }
        k += n;
    }
    out
}
