//! An optimizer bound to parameters: owns their state and the step counter, checks every
//! call, and runs each step on its backend.

use crate::checkpoint::{self, CheckpointMeta, StateTensor};
use crate::cpu::CpuEngine;
use crate::{ParamSpec, Program, RuntimeError};
use gdc_compiler::interp::{self, Interpreter};
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
}

/// How an optimizer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    /// Worker threads for the CPU backend (`None`: one per available core).
    pub threads: Option<usize>,
}

enum Engine {
    Cpu(Box<CpuEngine>),
    Interp(Box<Interpreter>),
}

/// A compiled optimizer bound to parameters; owns their state and the step counter.
pub struct Optimizer {
    program: Program,
    specs: Vec<ParamSpec>,
    engine: Engine,
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
        let bound: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let engine = match options.backend {
            Backend::Interp => Engine::Interp(Box::new(Interpreter::new(program.plan().clone(), &bound)?)),
            Backend::Cpu => {
                let threads = match options.threads {
                    Some(0) => return Err(RuntimeError::NoThreads),
                    Some(n) => n,
                    None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                };
                let bound = interp::bind(program.plan(), &bound)?;
                let plan = Arc::clone(&program.inner.plan);
                let code = Arc::clone(&program.inner.cpu);
                Engine::Cpu(Box::new(CpuEngine::new(plan, code, bound, threads)?))
            }
        };
        Ok(Optimizer { program: program.clone(), specs: params.to_vec(), engine })
    }

    /// Applies one step: `params[i]` is updated in place from `grads[i]`. A call with the
    /// wrong number of tensors or wrong lengths is refused before anything changes.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<(), RuntimeError> {
        match &mut self.engine {
            Engine::Cpu(e) => e.step(params, grads),
            Engine::Interp(it) => {
                let mut values: Vec<Vec<f64>> =
                    params.iter().map(|p| p.iter().map(|x| f64::from(*x)).collect()).collect();
                let grads: Vec<Vec<f64>> = grads.iter().map(|g| g.iter().map(|x| f64::from(*x)).collect()).collect();
                it.step(&mut values, &grads)?;
                for (p, v) in params.iter_mut().zip(&values) {
                    for (x, y) in p.iter_mut().zip(v) {
                        *x = *y as f32;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sets a hyperparameter by name, checked against its declared type and range; it takes
    /// effect at the next step, without recompiling.
    pub fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), RuntimeError> {
        let i = interp::check_hyper(&self.program.plan().module, name, value)?;
        self.hyper_values_mut()[i] = value;
        Ok(())
    }

    fn hyper_values(&self) -> &[f64] {
        match &self.engine {
            Engine::Cpu(e) => &e.hypers,
            Engine::Interp(it) => &it.hypers,
        }
    }

    fn hyper_values_mut(&mut self) -> &mut Vec<f64> {
        match &mut self.engine {
            Engine::Cpu(e) => &mut e.hypers,
            Engine::Interp(it) => &mut it.hypers,
        }
    }

    /// A hyperparameter's current value (booleans as 0 or 1), or `None` if there is none.
    pub fn hyper(&self, name: &str) -> Option<f64> {
        let i = self.program.plan().module.hypers.iter().position(|h| h.name == name)?;
        Some(self.hyper_values()[i])
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

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        match &self.engine {
            Engine::Cpu(e) => e.step,
            Engine::Interp(it) => it.step,
        }
    }

    pub fn params(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// A copy of state `name` of parameter `param`, as float32 (`None` before the first
    /// step, or if the parameter has no such state).
    pub fn state(&self, param: &str, name: &str) -> Option<Vec<f32>> {
        let i = self.specs.iter().position(|p| p.name == param)?;
        let s = self.program.plan().module.states.iter().position(|st| st.name == name)?;
        match &self.engine {
            Engine::Cpu(e) => e.state(i, s).map(|x| x.to_vec()),
            Engine::Interp(it) => Some(it.state(i, name)?.data.iter().map(|x| *x as f32).collect()),
        }
    }

    /// Saves the state of every parameter, the step count, the hyperparameters and globals
    /// as safetensors at `path`, keyed by parameter name and tied to the program's hash.
    /// The write is atomic: an interrupted save leaves the previous file in place.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), RuntimeError> {
        let Engine::Cpu(e) = &self.engine else { return Err(RuntimeError::Unsupported("checkpointing")) };
        let m = &self.program.plan().module;
        let mut tensors = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            for (s, st) in m.states.iter().enumerate() {
                if let Some(data) = e.state(i, s) {
                    // `like(p)` state has the parameter's shape; other state its declared one.
                    let shape = match &st.shape {
                        gdc_dsl::types::Shape::Like => spec.shape.clone(),
                        declared => {
                            let bp = &e.params[i];
                            interp::names_of(declared).iter().map(|n| interp::size_of(n, bp)).collect()
                        }
                    };
                    tensors.push(StateTensor {
                        param: spec.name.clone(),
                        state: st.name.clone(),
                        shape,
                        data: data.to_vec(),
                    });
                }
            }
        }
        let meta = CheckpointMeta {
            program_hash: self.program.hash().to_string(),
            optimizer: self.program.name().to_string(),
            params: self.specs.iter().map(|p| (p.name.clone(), p.shape.clone())).collect(),
            step: e.step,
            hypers: m.hypers.iter().zip(&e.hypers).map(|(h, v)| (h.name.clone(), *v)).collect(),
            globals: e.globals.clone(),
        };
        Ok(checkpoint::save(path.as_ref(), &meta, &tensors)?)
    }

    /// Restores a checkpoint saved by [`Optimizer::save_checkpoint`] of the same program and
    /// the same parameters (by name; their order may differ). Everything is checked before
    /// anything changes: on an error the optimizer is as it was.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), RuntimeError> {
        let path = path.as_ref();
        let (meta, tensors) = checkpoint::load(path)?;
        let params: Vec<(String, Vec<usize>)> = self.specs.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        checkpoint::check_compatible(&meta, self.program.hash(), self.program.name(), &params)?;
        let m = &self.program.plan().module;
        let bad = |what: String| RuntimeError::CheckpointState { path: path.display().to_string(), what };
        let Engine::Cpu(e) = &mut self.engine else { return Err(RuntimeError::Unsupported("checkpointing")) };
        let mut hypers = e.hypers.clone();
        for (name, value) in &meta.hypers {
            let i = interp::check_hyper(m, name, *value).map_err(|err| bad(err.to_string()))?;
            hypers[i] = *value;
        }
        if meta.globals.len() != e.globals.len() {
            return Err(bad(format!("it has {} globals, the program {}", meta.globals.len(), e.globals.len())));
        }
        // Every state each parameter uses must be there, with its length, once a step ran.
        let mut updates = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            for (s, st) in m.states.iter().enumerate() {
                let Some(len) = e.state_len(i, s) else { continue };
                let found = tensors.iter().find(|t| t.param == spec.name && t.state == st.name);
                match (found, meta.step) {
                    (None, 0) => {}
                    (None, _) => {
                        return Err(bad(format!("state `{}` of parameter `{}` is missing", st.name, spec.name)))
                    }
                    (Some(t), _) if t.data.len() != len => {
                        return Err(bad(format!(
                            "state `{}` of parameter `{}` has {} values, the optimizer needs {len}",
                            st.name,
                            spec.name,
                            t.data.len()
                        )))
                    }
                    (Some(t), _) => updates.push((i, s, &t.data)),
                }
            }
        }
        for (i, s, data) in updates {
            e.set_state(i, s, data);
        }
        e.hypers = hypers;
        e.globals = meta.globals.clone();
        e.step = meta.step;
        e.initialised = meta.step > 0;
        Ok(())
    }
}
