//! Golden cases on the runtime's backends (cpu, cuda, interp): an [`Optimizer`] as a
//! [`Stepper`], rounding the case's float64 values to float32 on the way in and widening
//! them on the way out.

use crate::{Backend, Optimizer, Options, ParamSpec, Program, RuntimeError};
use gdc_compiler::golden::{self, Case, CaseError, GivenInput, StepResult, Stepper};

impl Stepper for Optimizer {
    fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), CaseError> {
        Optimizer::set_hyper(self, name, value).map_err(|e| CaseError::Backend(e.to_string()))
    }

    fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>], inputs: &[GivenInput]) -> Result<(), CaseError> {
        let i32: Vec<Vec<f32>> = inputs.iter().map(|x| x.data.iter().map(|v| *v as f32).collect()).collect();
        let mut given = crate::Inputs::new();
        for (x, data) in inputs.iter().zip(&i32) {
            given.add(&x.param, &x.name, &x.shape, data);
        }
        let mut p32: Vec<Vec<f32>> = params.iter().map(|p| p.iter().map(|x| *x as f32).collect()).collect();
        let g32: Vec<Vec<f32>> = grads.iter().map(|g| g.iter().map(|x| *x as f32).collect()).collect();
        let mut views: Vec<&mut [f32]> = p32.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = g32.iter().map(|g| g.as_slice()).collect();
        Optimizer::step_with_inputs(self, &mut views, &gviews, &given)
            .map_err(|e| CaseError::Backend(e.to_string()))?;
        for (p, q) in params.iter_mut().zip(&p32) {
            for (x, y) in p.iter_mut().zip(q) {
                *x = f64::from(*y);
            }
        }
        Ok(())
    }

    fn state(&self, param: usize, name: &str) -> Option<Vec<f64>> {
        let p = self.params().get(param)?.name.clone();
        Some(Optimizer::state(self, &p, name)?.into_iter().map(f64::from).collect())
    }
}

/// Why a replay on a runtime backend could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Case(#[from] CaseError),
}

/// Replays a golden case on `backend`; returns every step's result. [`Backend::Cuda`] runs
/// on device 0 and needs a program loaded from a `--target cuda` artifact
/// ([`Program::load`], [`Program::from_artifact`]); without one, or without a GPU, the typed
/// error comes back as [`ReplayError::Runtime`].
pub fn replay(program: &Program, case: &Case, backend: Backend) -> Result<Vec<StepResult>, ReplayError> {
    let infos = golden::param_infos(case)?;
    let specs: Vec<ParamSpec> = case
        .params
        .iter()
        .zip(infos)
        .map(|(p, info)| ParamSpec {
            role: info.role,
            base_shape: info.base_shape,
            ..ParamSpec::new(p.name.clone(), &p.shape)
        })
        .collect();
    let mut opt = Optimizer::with_options(program, &specs, Options { backend, threads: Some(2) })?;
    Ok(golden::replay_on(&mut opt, case)?)
}
