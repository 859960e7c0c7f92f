//! Steps a candle model's parameters with a compiled gdc optimizer, in place.
//!
//! [`GdcOptimizer`] holds a model's [`Var`]s, each with a name and a [`Role`] (so policies
//! route `hidden` matrices to Muon and muP finds its base shapes), and a
//! [`gdc_runtime::Optimizer`] bound to them. [`GdcOptimizer::step`] hands the optimizer the
//! variables' own storage and the gradients' storage, borrowed through candle's public
//! in-place-op API (`Tensor::inplace_op2`): nothing is copied for contiguous float32 CPU
//! tensors, which is what `Var`s and the gradients of `backward` are. A gradient that is a
//! strided view (rare: a broadcast or transposed result kept as is) is made contiguous
//! first, one copy of that gradient. The costs, measured, are in BENCHMARKS.md ("candle
//! adapter") and come from `cargo run --release -p gdc-candle --bin bench-candle`.
//!
//! Only CPU tensors: candle's CUDA backend needs its `cuda` feature, which builds candle's
//! own kernels with nvcc; a CUDA variable is refused with [`Error::Device`].
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor, Var};
//! use gdc_candle::{GdcOptimizer, NamedVar, Role};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let program = gdc_runtime::Program::compile_file("examples/optimizers/adamw.gd")?;
//! let w = Var::zeros((4, 3), DType::F32, &Device::Cpu)?;
//! let mut opt = GdcOptimizer::new(&program, vec![NamedVar::new("w", w.clone()).with_role(Role::Hidden)])?;
//! let x = Tensor::ones((3, 2), DType::F32, &Device::Cpu)?;
//! let loss = w.as_tensor().matmul(&x)?.sqr()?.sum_all()?;
//! opt.backward_step(&loss)?;
//! # Ok(()) }
//! ```

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Tensor, Var};
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program, RuntimeError};
use std::cell::RefCell;

pub use gdc_runtime::Role;

/// What can go wrong between a candle model and a gdc optimizer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// `step` was given gradients without one for this parameter (it did not take part in
    /// the loss, or the gradients belong to another model).
    #[error("no gradient for parameter `{0}`: it did not take part in the loss, or the gradients are another model's")]
    MissingGrad(String),
    #[error(
        "parameter `{name}` is {dtype:?}; gdc steps float32 parameters (convert the model with `to_dtype(DType::F32)`)"
    )]
    DType { name: String, dtype: DType },
    #[error("parameter `{name}` is on {device}; gdc-candle steps CPU tensors (candle's CUDA tensors need its `cuda` feature, which this build does not use)")]
    Device { name: String, device: String },
    #[error("the gradient of `{name}` has {got} elements but the parameter has {want}")]
    GradShape { name: String, got: usize, want: usize },
    #[error("parameter `{0}` has no variable of the same name in the muP base model")]
    MissingBase(String),
    #[error("parameter `{name}` is not a contiguous tensor (a view); give the optimizer the variable itself")]
    Layout { name: String },
}

/// A model parameter as the optimizer sees it: a name (unique; checkpoints and
/// hyperparameter reports use it), the variable, its role and, for muP, its base shape.
#[derive(Clone, Debug)]
pub struct NamedVar {
    pub name: String,
    pub var: Var,
    pub role: Role,
    pub base_shape: Option<Vec<usize>>,
}

impl NamedVar {
    pub fn new(name: impl Into<String>, var: Var) -> NamedVar {
        NamedVar { name: name.into(), var, role: Role::Other, base_shape: None }
    }

    pub fn with_role(mut self, role: Role) -> NamedVar {
        self.role = role;
        self
    }

    /// The shape of this parameter in the muP base model (`width_mult` and `inf_dims`).
    pub fn with_base_shape(mut self, base: &[usize]) -> NamedVar {
        self.base_shape = Some(base.to_vec());
        self
    }

    fn spec(&self) -> ParamSpec {
        let spec = ParamSpec::new(self.name.clone(), self.var.dims()).with_role(self.role);
        match &self.base_shape {
            Some(base) => spec.with_base_shape(base),
            None => spec,
        }
    }
}

/// A gdc optimizer bound to a candle model's variables.
pub struct GdcOptimizer {
    optimizer: Optimizer,
    vars: Vec<NamedVar>,
}

impl GdcOptimizer {
    /// Binds `program` to `vars` (float32 CPU variables, in the order the optimizer reports
    /// and checkpoints them), with a CPU optimizer on every core.
    pub fn new(program: &Program, vars: Vec<NamedVar>) -> Result<GdcOptimizer, Error> {
        GdcOptimizer::with_options(program, vars, Options::default())
    }

    /// [`GdcOptimizer::new`] with the runtime's options: the worker threads (one is best
    /// for models of a few small matrices, where a step is microseconds) or the
    /// interpreter backend. The cuda backend is refused: its steps need device buffers.
    pub fn with_options(program: &Program, vars: Vec<NamedVar>, options: Options) -> Result<GdcOptimizer, Error> {
        for v in &vars {
            check_var(v)?;
        }
        if options.backend == Backend::Cuda {
            return Err(Error::Device {
                name: "(all)".into(),
                device: "the cuda backend; gdc-candle steps CPU tensors".into(),
            });
        }
        let specs: Vec<ParamSpec> = vars.iter().map(NamedVar::spec).collect();
        let optimizer = Optimizer::with_options(program, &specs, options)?;
        Ok(GdcOptimizer { optimizer, vars })
    }

    /// Binds `program` to every variable of a candle-nn `VarMap`, in name order, with the
    /// role `role(name, shape)` picks (the `VarBuilder` path names, such as `blocks.0.attn.q`).
    pub fn from_varmap(
        program: &Program,
        varmap: &candle_nn::VarMap,
        role: impl Fn(&str, &[usize]) -> Role,
    ) -> Result<GdcOptimizer, Error> {
        let vars = sorted_vars(varmap)?
            .into_iter()
            .map(|(name, var)| {
                let r = role(&name, var.dims());
                NamedVar::new(name, var).with_role(r)
            })
            .collect();
        GdcOptimizer::new(program, vars)
    }

    /// [`GdcOptimizer::from_varmap`] for muP: every variable's base shape is that of the
    /// variable of the same name in `base`, the same model built at its base width (its
    /// values are not used). A name missing from `base` is an error naming it.
    pub fn from_varmap_mup(
        program: &Program,
        varmap: &candle_nn::VarMap,
        base: &candle_nn::VarMap,
        role: impl Fn(&str, &[usize]) -> Role,
    ) -> Result<GdcOptimizer, Error> {
        let base = sorted_vars(base)?;
        let vars = sorted_vars(varmap)?
            .into_iter()
            .map(|(name, var)| {
                let found = base.iter().find(|(n, _)| *n == name).ok_or_else(|| Error::MissingBase(name.clone()))?;
                let r = role(&name, var.dims());
                let base_dims = found.1.dims().to_vec();
                Ok(NamedVar::new(name, var).with_role(r).with_base_shape(&base_dims))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        GdcOptimizer::new(program, vars)
    }

    /// One optimizer step on every variable, from the gradients of `loss.backward()`.
    /// Refused before anything changes when a gradient is missing or of the wrong size.
    pub fn step(&mut self, grads: &GradStore) -> Result<(), Error> {
        self.step_with_inputs(grads, &[])
    }

    /// [`GdcOptimizer::step`] with the per-step inputs the program declares, each
    /// `(variable name, input name, tensor)`: K-FAC's `a` (a layer's input activations,
    /// `[batch, in]`) and `s` (the gradient at its output, `[batch, out]`; candle's
    /// `GradStore` keeps only variables' gradients, so add a zero `Var` of the output's shape
    /// to the layer's output and take its gradient), Sophia-G's `h`. The
    /// training code collects them (candle has no module hooks); they are copied into the
    /// step (float32 CPU tensors of any layout) and not kept.
    /// [`Optimizer::inputs_next_step`] (through [`GdcOptimizer::optimizer_mut`]) says which
    /// the next step reads.
    pub fn step_with_inputs(&mut self, grads: &GradStore, inputs: &[(&str, &str, &Tensor)]) -> Result<(), Error> {
        let mut copied = Vec::with_capacity(inputs.len());
        for (param, input, t) in inputs {
            let what = format!("input `{input}` of `{param}`");
            if !t.device().is_cpu() {
                return Err(Error::Device { name: what, device: format!("{:?}", t.device().location()) });
            }
            if t.dtype() != DType::F32 {
                return Err(Error::DType { name: what, dtype: t.dtype() });
            }
            copied.push((t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?));
        }
        let mut given = gdc_runtime::Inputs::new();
        for ((param, input, _), (shape, data)) in inputs.iter().zip(&copied) {
            given.add(param, input, shape, data);
        }
        let mut found = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            let g = grads.get(v.var.as_tensor()).ok_or_else(|| Error::MissingGrad(v.name.clone()))?;
            if g.elem_count() != v.var.elem_count() {
                return Err(Error::GradShape { name: v.name.clone(), got: g.elem_count(), want: v.var.elem_count() });
            }
            if !g.device().is_cpu() {
                return Err(Error::Device {
                    name: format!("{} (its gradient)", v.name),
                    device: format!("{:?}", g.device().location()),
                });
            }
            if g.dtype() != DType::F32 {
                return Err(Error::DType { name: format!("{} (its gradient)", v.name), dtype: g.dtype() });
            }
            // A strided gradient is copied into a contiguous one; a contiguous one is shared.
            found.push(g.contiguous()?);
        }
        let pairs: Vec<(&Tensor, &Tensor)> = self.vars.iter().map(|v| v.var.as_tensor()).zip(found.iter()).collect();
        let optimizer = &mut self.optimizer;
        borrow_all(&pairs, &self.vars, &mut |params, grads| optimizer.step_with_inputs(params, grads, &given))
    }

    /// `loss.backward()` then [`GdcOptimizer::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), Error> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Sets a hyperparameter (`lr`, or `muon.lr` in a policy) for the next steps.
    pub fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), Error> {
        Ok(self.optimizer.set_hyper(name, value)?)
    }

    /// The optimizer's state `state` of parameter `param`, as float32 (a copy).
    pub fn state(&self, param: &str, state: &str) -> Option<Vec<f32>> {
        self.optimizer.state(param, state)
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The optimizer itself: checkpoints, `swap_state`, hyperparameter listing.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    pub fn vars(&self) -> &[NamedVar] {
        &self.vars
    }

    /// Swaps state `name` (an EMA, schedule-free's `z`) into the variables and back, as
    /// [`Optimizer::swap_state`] does for plain slices; in place, no copy of the variables.
    pub fn swap_state(&mut self, name: &str) -> Result<(), Error> {
        let pairs: Vec<(&Tensor, &Tensor)> = self.vars.iter().map(|v| (v.var.as_tensor(), v.var.as_tensor())).collect();
        let optimizer = &mut self.optimizer;
        borrow_params(&pairs, &self.vars, &mut |params| optimizer.swap_state(name, params))
    }
}

/// A `VarMap`'s variables, sorted by name.
fn sorted_vars(varmap: &candle_nn::VarMap) -> Result<Vec<(String, Var)>, Error> {
    let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

fn check_var(v: &NamedVar) -> Result<(), Error> {
    let t = v.var.as_tensor();
    if !t.device().is_cpu() {
        return Err(Error::Device { name: v.name.clone(), device: format!("{:?}", t.device().location()) });
    }
    if t.dtype() != DType::F32 {
        return Err(Error::DType { name: v.name.clone(), dtype: t.dtype() });
    }
    if t.layout().contiguous_offsets().is_none() {
        return Err(Error::Layout { name: v.name.clone() });
    }
    Ok(())
}

/// The float32 elements `layout` covers in `storage`, when they are contiguous.
fn slice_of<'s>(storage: &'s CpuStorage, layout: &Layout) -> Option<&'s [f32]> {
    let (start, end) = layout.contiguous_offsets()?;
    match storage {
        CpuStorage::F32(v) => v.get(start..end),
        _ => None,
    }
}

fn slice_of_mut<'s>(storage: &'s mut CpuStorage, layout: &Layout) -> Option<&'s mut [f32]> {
    let (start, end) = layout.contiguous_offsets()?;
    match storage {
        CpuStorage::F32(v) => v.get_mut(start..end),
        _ => None,
    }
}

type StepFn<'f> = dyn FnMut(&mut [&mut [f32]], &[&[f32]]) -> Result<(), RuntimeError> + 'f;

/// Borrows every `(parameter, gradient)` pair's storage (the parameter's for writing) and
/// calls `f` once with all of them. candle lends a tensor's storage only inside an in-place
/// op's callback, so the borrows nest: the op on pair `i` borrows the next pair's inside its
/// own callback, and the innermost calls `f`. The recursion is one level per parameter.
fn borrow_all(pairs: &[(&Tensor, &Tensor)], vars: &[NamedVar], f: &mut StepFn<'_>) -> Result<(), Error> {
    let outcome = RefCell::new(None);
    descend(pairs, vars, Vec::new(), Vec::new(), f, &outcome, true)?;
    outcome.into_inner().unwrap_or(Ok(()))
}

type ParamsFn<'f> = dyn FnMut(&mut [&mut [f32]]) -> Result<(), RuntimeError> + 'f;

/// [`borrow_all`] for the parameters alone (`pairs[i].1` is ignored).
fn borrow_params(pairs: &[(&Tensor, &Tensor)], vars: &[NamedVar], f: &mut ParamsFn<'_>) -> Result<(), Error> {
    let mut step = |params: &mut [&mut [f32]], _: &[&[f32]]| f(params);
    let outcome = RefCell::new(None);
    descend(pairs, vars, Vec::new(), Vec::new(), &mut step, &outcome, false)?;
    outcome.into_inner().unwrap_or(Ok(()))
}

/// The outcome of the innermost call, or why the nesting stopped (an in-place op can only
/// return candle's error type, so gdc's errors travel beside it).
type Outcome = RefCell<Option<Result<(), Error>>>;

/// One level of the nesting: borrows `pairs[0]` inside an in-place op and recurses on the
/// rest with the borrowed slices appended; with no pairs left, runs the step.
fn descend<'s>(
    pairs: &[(&Tensor, &Tensor)],
    vars: &[NamedVar],
    mut params: Vec<&'s mut [f32]>,
    grads: Vec<&'s [f32]>,
    f: &mut StepFn<'_>,
    outcome: &Outcome,
    with_grads: bool,
) -> Result<(), Error> {
    let Some(((param, grad), rest)) = pairs.split_first() else {
        *outcome.borrow_mut() = Some(f(&mut params, &grads).map_err(Error::from));
        return Ok(());
    };
    let level = Level {
        rest,
        vars,
        params: RefCell::new(params),
        grads: RefCell::new(grads),
        f: RefCell::new(f),
        outcome,
        with_grads,
    };
    if with_grads {
        param.inplace_op2(grad, &level)?;
    } else {
        param.inplace_op1(&level)?;
    }
    Ok(())
}

/// The in-place op of one level of [`descend`].
struct Level<'a, 'f, 'g, 's> {
    rest: &'a [(&'a Tensor, &'a Tensor)],
    vars: &'a [NamedVar],
    params: RefCell<Vec<&'s mut [f32]>>,
    grads: RefCell<Vec<&'s [f32]>>,
    f: RefCell<&'a mut StepFn<'f>>,
    outcome: &'g Outcome,
    with_grads: bool,
}

impl Level<'_, '_, '_, '_> {
    fn name(&self) -> String {
        let i = self.vars.len() - self.rest.len() - 1;
        self.vars[i].name.clone()
    }

    /// Appends this level's slices and descends. A storage that is not contiguous float32
    /// (checked at binding, so a model changed behind the optimizer's back) stops the step
    /// before anything is written.
    fn go(&self, param: Option<&mut [f32]>, grad: Option<&[f32]>) -> candle_core::Result<()> {
        let (Some(param), Some(grad)) = (param, grad) else {
            *self.outcome.borrow_mut() = Some(Err(Error::Layout { name: self.name() }));
            return Ok(());
        };
        let mut params: Vec<&mut [f32]> = std::mem::take(&mut *self.params.borrow_mut());
        let mut grads: Vec<&[f32]> = std::mem::take(&mut *self.grads.borrow_mut());
        params.push(param);
        grads.push(grad);
        let mut f = self.f.borrow_mut();
        if let Err(e) = descend(self.rest, self.vars, params, grads, &mut **f, self.outcome, self.with_grads) {
            self.outcome.borrow_mut().get_or_insert(Err(e));
        }
        Ok(())
    }
}

impl candle_core::InplaceOp2 for Level<'_, '_, '_, '_> {
    fn name(&self) -> &'static str {
        "gdc-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        self.go(slice_of_mut(s1, l1), slice_of(s2, l2))
    }
}

impl candle_core::InplaceOp1 for Level<'_, '_, '_, '_> {
    fn name(&self) -> &'static str {
        "gdc-swap"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout) -> candle_core::Result<()> {
        self.go(slice_of_mut(s1, l1), Some(&[]))
    }
}
