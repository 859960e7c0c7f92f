//! Golden cases (`gdc-golden-1`, see tests/golden/README.md): reading and validating a case,
//! and replaying it on any backend (the reference interpreter here, the runtime's backends
//! through [`Stepper`]), step by step, measuring each step's worst
//! error as a fraction of the case's tolerance (1.0 is the limit).

use crate::interp::{InterpError, Interpreter, ParamInfo};
use crate::ir::Role;
use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Serialize)]
pub struct Case {
    pub format: String,
    pub optimizer: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub hyper: BTreeMap<String, f64>,
    pub params: Vec<ParamCase>,
    pub steps: Vec<StepCase>,
    pub tolerance: Tolerance,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ParamCase {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Vec<f64>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub base_shape: Option<Vec<usize>>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct StepCase {
    pub grads: BTreeMap<String, Vec<f64>>,
    /// Tensors handed over with the step besides the gradients: parameter, then input name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, BTreeMap<String, InputCase>>>,
    pub expected: BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    pub expected_state: Option<BTreeMap<String, Vec<f64>>>,
}

/// One input of one parameter at one step.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct InputCase {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// An input as a step hands it to a [`Stepper`]: parameter, input name, shape, data.
#[derive(Clone, Debug, PartialEq)]
pub struct GivenInput {
    pub param: String,
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl StepCase {
    /// The step's inputs, parameter by parameter, in name order.
    pub fn given_inputs(&self) -> Vec<GivenInput> {
        let mut out = Vec::new();
        for (param, named) in self.inputs.iter().flatten() {
            for (name, x) in named {
                out.push(GivenInput {
                    param: param.clone(),
                    name: name.clone(),
                    shape: x.shape.clone(),
                    data: x.data.clone(),
                });
            }
        }
        out
    }
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

/// A case that cannot be replayed: unreadable, malformed, or not matching the optimizer.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid golden case: {message}")]
    Json { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// The backend refused a step or a hyperparameter.
    #[error("{0}")]
    Backend(String),
}

/// A backend a case can be replayed on: parameters and gradients in float64 at the boundary
/// (a float32 backend rounds them on the way in and widens them on the way out).
pub trait Stepper {
    fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), CaseError>;
    /// One step; `inputs`: what the step hands over besides the gradients.
    fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>], inputs: &[GivenInput]) -> Result<(), CaseError>;
    /// State `name` of parameter `param` (by position), if it has it.
    fn state(&self, param: usize, name: &str) -> Option<Vec<f64>>;
}

impl Stepper for Interpreter {
    fn set_hyper(&mut self, name: &str, value: f64) -> Result<(), CaseError> {
        Ok(Interpreter::set_hyper(self, name, value)?)
    }
    fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>], inputs: &[GivenInput]) -> Result<(), CaseError> {
        let named: Vec<crate::inputs::Named<f64>> =
            inputs.iter().map(|x| (x.param.as_str(), x.name.as_str(), x.shape.as_slice(), x.data.as_slice())).collect();
        let given = crate::inputs::collect(&self.plan.module, &self.params, &named)?;
        Ok(Interpreter::step_with_inputs(self, params, grads, &given)?)
    }
    fn state(&self, param: usize, name: &str) -> Option<Vec<f64>> {
        Interpreter::param_state(self, param, name)
    }
}

/// Reads and validates a case file.
pub fn read_case(path: &str) -> Result<Case, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read { path: path.into(), source })?;
    parse_case(&text, path)
}

/// Parses and validates a case from its text; `path` names it in errors.
pub fn parse_case(text: &str, path: &str) -> Result<Case, CaseError> {
    let case: Case =
        serde_json::from_str(text).map_err(|e| CaseError::Json { path: path.into(), message: e.to_string() })?;
    validate(&case)?;
    Ok(case)
}

fn validate(case: &Case) -> Result<(), CaseError> {
    let bad = |m: String| Err(CaseError::Invalid(m));
    if case.format != "gdc-golden-1" {
        return bad(format!("unknown case format `{}`; expected `gdc-golden-1`", case.format));
    }
    if !(case.tolerance.rel >= 0.0 && case.tolerance.abs >= 0.0) {
        return bad("the tolerance must be non-negative".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &case.params {
        if !names.insert(p.name.as_str()) {
            return bad(format!("parameter `{}` appears twice", p.name));
        }
        let Some(n) = p.shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)) else {
            return bad(format!("parameter `{}` has shape {:?}, too large to hold", p.name, p.shape));
        };
        if p.init.len() != n {
            return bad(format!(
                "parameter `{}` has shape {:?} ({n} elements) but {} initial values",
                p.name,
                p.shape,
                p.init.len()
            ));
        }
    }
    for (i, s) in case.steps.iter().enumerate() {
        for (what, map) in [("grads", &s.grads), ("expected", &s.expected)] {
            for p in &case.params {
                let n: usize = p.shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
                match map.get(&p.name) {
                    None => return bad(format!("step {}: `{what}` has no values for parameter `{}`", i + 1, p.name)),
                    Some(v) if v.len() != n => {
                        return bad(format!(
                            "step {}: `{what}` of `{}` has {} values, but its shape {:?} has {n}",
                            i + 1,
                            p.name,
                            v.len(),
                            p.shape
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(extra) = map.keys().find(|k| !names.contains(k.as_str())) {
                return bad(format!("step {}: `{what}` names `{extra}`, which is not a parameter of the case", i + 1));
            }
        }
        for (param, named) in s.inputs.iter().flatten() {
            if !names.contains(param.as_str()) {
                return bad(format!("step {}: `inputs` names `{param}`, which is not a parameter of the case", i + 1));
            }
            for (name, x) in named {
                let n = x.shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
                if x.data.len() != n {
                    return bad(format!(
                        "step {}: input `{name}` of `{param}` has {} values, but its shape {:?} has {n}",
                        i + 1,
                        x.data.len(),
                        x.shape
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The result of one step of a replay.
#[derive(Debug, Serialize)]
pub struct StepResult {
    pub step: usize,
    /// The worst |actual - expected| / (abs + rel * |expected|) over every checked value.
    pub worst: f64,
    /// Where the worst value is (`w[3]`, `state ema.w[0]`).
    pub at: String,
    pub params: BTreeMap<String, Vec<f64>>,
}

/// Each parameter's role and base shape, as the case gives them.
pub fn param_infos(case: &Case) -> Result<Vec<ParamInfo>, CaseError> {
    case.params
        .iter()
        .map(|p| {
            let role = match &p.role {
                None => Role::Other,
                Some(r) => Role::from_name(r).ok_or_else(|| {
                    CaseError::Invalid(format!(
                        "parameter `{}` has role `{r}`; the roles are hidden, embedding, output, input, bias, norm, other",
                        p.name
                    ))
                })?,
            };
            Ok(ParamInfo { role, base_shape: p.base_shape.clone(), shard: None })
        })
        .collect()
}

/// Replays a case on the interpreter; returns every step's result.
pub fn replay(plan: Plan, case: &Case) -> Result<Vec<StepResult>, CaseError> {
    let shapes: Vec<(String, Vec<usize>)> = case.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    let mut it = Interpreter::new_with(plan, &shapes, &param_infos(case)?)?;
    replay_on(&mut it, case)
}

/// Replays a case on a backend bound to the case's parameters, in order; returns every
/// step's result.
pub fn replay_on(it: &mut dyn Stepper, case: &Case) -> Result<Vec<StepResult>, CaseError> {
    for (name, value) in &case.hyper {
        it.set_hyper(name, *value)?;
    }
    let mut values: Vec<Vec<f64>> = case.params.iter().map(|p| p.init.clone()).collect();
    let tol = case.tolerance;
    let frac = |a: f64, e: f64| {
        let err = (a - e).abs();
        if err.is_nan() {
            if a.is_nan() && e.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            err / (tol.abs + tol.rel * e.abs())
        }
    };
    let mut results = Vec::new();
    for (i, s) in case.steps.iter().enumerate() {
        let grads: Vec<Vec<f64>> = case.params.iter().map(|p| s.grads[&p.name].clone()).collect();
        it.step(&mut values, &grads, &s.given_inputs())?;
        let mut worst = 0.0f64;
        let mut at = String::new();
        for (p, v) in case.params.iter().zip(&values) {
            for (j, (a, e)) in v.iter().zip(&s.expected[&p.name]).enumerate() {
                let f = frac(*a, *e);
                if f > worst || (f.is_nan() && !worst.is_nan()) {
                    worst = f;
                    at = format!("{}[{j}]", p.name);
                }
            }
        }
        for (key, expected) in s.expected_state.iter().flatten() {
            let (state, pname) = key
                .split_once('.')
                .ok_or_else(|| CaseError::Invalid(format!("expected_state key `{key}` is not `state.param`")))?;
            let pi = case
                .params
                .iter()
                .position(|p| p.name == pname)
                .ok_or_else(|| CaseError::Invalid(format!("expected_state names unknown parameter `{pname}`")))?;
            let t = it.state(pi, state).ok_or_else(|| {
                CaseError::Invalid(format!("the optimizer has no state `{state}` for parameter `{pname}`"))
            })?;
            if t.len() != expected.len() {
                return Err(CaseError::Invalid(format!(
                    "expected_state `{key}` has {} values, the state has {}",
                    expected.len(),
                    t.len()
                )));
            }
            for (j, (a, e)) in t.iter().zip(expected).enumerate() {
                let f = frac(*a, *e);
                if f > worst {
                    worst = f;
                    at = format!("state {key}[{j}]");
                }
            }
        }
        let params = case.params.iter().zip(&values).map(|(p, v)| (p.name.clone(), v.clone())).collect();
        results.push(StepResult { step: i + 1, worst, at, params });
    }
    Ok(results)
}
