//! An optimizer bound to parameters: owns their state and the step counter, checks every
//! call, and runs each step on its backend.

use crate::{ParamSpec, Program, RuntimeError};
use gdc_compiler::interp::Interpreter;
use gdc_compiler::ir::HyperTy;

/// Which backend runs the steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Cranelift machine code over a pool of worker threads, in float32.
    #[default]
    Cpu,
    /// The float64 reference interpreter (exact, slow): for checking.
    Interp,
}

/// How an optimizer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    /// Worker threads for the CPU backend (`None`: one per available core).
    pub threads: Option<usize>,
}

/// A compiled optimizer bound to parameters; owns their state and the step counter.
pub struct Optimizer {
    program: Program,
    specs: Vec<ParamSpec>,
    interp: Interpreter,
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
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|q| q.name == p.name) {
                return Err(RuntimeError::DuplicateParam(p.name.clone()));
            }
        }
        if options.threads == Some(0) {
            return Err(RuntimeError::NoThreads);
        }
        let bound: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let interp = Interpreter::new(program.plan().clone(), &bound)?;
        Ok(Optimizer { program: program.clone(), specs: params.to_vec(), interp })
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

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// A copy of state `name` of parameter `param`, as float32.
    pub fn state(&self, param: &str, name: &str) -> Option<Vec<f32>> {
        let i = self.specs.iter().position(|p| p.name == param)?;
        Some(self.interp.state(i, name)?.data.iter().map(|x| *x as f32).collect())
    }
}
