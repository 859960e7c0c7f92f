//! The gdc runtime: binds a compiled optimizer to a model's parameters, owns their state and
//! applies one step per training step, on plain `f32` memory any framework can hand over.
//!
//! The backend today is the float64 reference interpreter (exact, not fast): parameters and
//! gradients are widened to float64 for the step and the result rounded back to float32.
//! The CPU (Cranelift) and CUDA backends plug in behind this same API.

use gdc_compiler::interp::{InterpError, Interpreter};
use gdc_compiler::ir::HyperTy;

/// A parameter as the training code describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> ParamSpec {
        ParamSpec { name: name.into(), shape: shape.to_vec() }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Everything that can go wrong between training code and the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The optimizer source has errors (rendered, with carets and hints).
    #[error("the optimizer does not compile:\n{0}")]
    Compile(String),
    #[error("parameter names must be unique, `{0}` appears twice")]
    DuplicateParam(String),
    #[error(transparent)]
    Step(#[from] InterpError),
}

/// A compiled optimizer bound to parameters; owns their state and the step counter.
pub struct Optimizer {
    specs: Vec<ParamSpec>,
    interp: Interpreter,
}

impl Optimizer {
    /// Compiles `.gd` source and binds it to `params`. State is initialised at the first
    /// step, from the parameter values and hyperparameters in force then (`state z = p`
    /// copies the parameter as the first step receives it).
    pub fn from_source(source: &str, params: &[ParamSpec]) -> Result<Optimizer, RuntimeError> {
        let compiled = gdc_compiler::compile(source).map_err(|e| match e {
            gdc_compiler::CompileError::Source(d) => RuntimeError::Compile(gdc_dsl::render(&d, "<optimizer>", source)),
            other => RuntimeError::Compile(other.to_string()),
        })?;
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|q| q.name == p.name) {
                return Err(RuntimeError::DuplicateParam(p.name.clone()));
            }
        }
        let bound: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let interp = Interpreter::new(compiled.plan, &bound)?;
        Ok(Optimizer { specs: params.to_vec(), interp })
    }

    /// Applies one step: `params[i]` is updated in place from `grads[i]`. On an error nothing
    /// has changed.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<(), RuntimeError> {
        let mut values: Vec<Vec<f64>> = params.iter().map(|p| p.iter().map(|x| f64::from(*x)).collect()).collect();
        let grads: Vec<Vec<f64>> = grads.iter().map(|g| g.iter().map(|x| f64::from(*x)).collect()).collect();
        self.interp.step(&mut values, &grads)?;
        for (p, v) in params.iter_mut().zip(&values) {
            for (x, y) in p.iter_mut().zip(v) {
                *x = *y as f32;
            }
        }
        Ok(())
    }

    /// Sets a hyperparameter by name, checked against its declared type and range; it takes
    /// effect at the next step, without recompiling.
    pub fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), RuntimeError> {
        Ok(self.interp.set_hyper(name, value)?)
    }

    /// A hyperparameter's current value (booleans as 0 or 1), or `None` if there is none.
    pub fn hyper(&self, name: &str) -> Option<f64> {
        let i = self.interp.plan.module.hypers.iter().position(|h| h.name == name)?;
        Some(self.interp.hypers[i])
    }

    /// The hyperparameters: name, type and current value.
    pub fn hypers(&self) -> Vec<(String, HyperTy, f64)> {
        self.interp
            .plan
            .module
            .hypers
            .iter()
            .zip(&self.interp.hypers)
            .map(|(h, v)| (h.name.clone(), h.ty, *v))
            .collect()
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.interp.step
    }

    pub fn params(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// A copy of state `name` of parameter `param`, as float32.
    pub fn state(&self, param: &str, name: &str) -> Option<Vec<f32>> {
        let i = self.specs.iter().position(|p| p.name == param)?;
        Some(self.interp.state(i, name)?.data.iter().map(|x| *x as f32).collect())
    }
}
