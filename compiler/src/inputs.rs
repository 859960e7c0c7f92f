//! Per-step inputs: the tensors the training code hands an optimizer with a step besides the
//! gradients (K-FAC's activations `a` and output gradients `s`, Sophia's Hessian sample `h`),
//! checked against the program's `input` declarations before anything is stepped, and the
//! rule for which of them a step needs.
//!
//! An input is given per parameter, by name, with its shape and row-major data. Its declared
//! dimensions `rows` and `cols` must be the parameter's (`cols` the product of the dimensions
//! after the first); any other declared dimension (`batch`) is the input's own, sized by what
//! is given, the same wherever the parameter's inputs name it. An input declared without a
//! shape has the parameter's shape exactly. Inputs are read during the step and never kept:
//! a program that needs one later copies it into state.

use crate::interp::{BoundParam, InterpError};
use crate::ir::{InputInfo, Module};
use crate::plan::{Buffer, FuncPlan, Item};
use gdc_dsl::types::Shape;

/// One input handed over for one parameter: its shape and row-major data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Given<'a, T> {
    pub shape: &'a [usize],
    pub data: &'a [T],
}

/// What one step hands over, checked: per bound member (binding order), per declared input
/// (`Module::inputs` order), the tensor or nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInputs<'a, T> {
    pub members: Vec<Vec<Option<Given<'a, T>>>>,
}

impl<'a, T> StepInputs<'a, T> {
    /// A step that hands nothing over (no allocation for a program without inputs: a plain
    /// step must cost nothing for the feature).
    pub fn none(members: usize, inputs: usize) -> StepInputs<'a, T> {
        if inputs == 0 {
            return StepInputs { members: Vec::new() };
        }
        StepInputs { members: (0..members).map(|_| (0..inputs).map(|_| None).collect()).collect() }
    }

    /// The shape of each input of member `i` (`None`: not given): what `present` and the
    /// input dimensions read.
    pub fn shapes(&self, i: usize) -> Vec<Option<Vec<usize>>> {
        self.members
            .get(i)
            .map(|m| m.iter().map(|g| g.as_ref().map(|g| g.shape.to_vec())).collect())
            .unwrap_or_default()
    }
}

/// One named input as the training code gives it: parameter name, input name, shape, data.
pub type Named<'a, T> = (&'a str, &'a str, &'a [usize], &'a [T]);

/// The shape input `info` has for a parameter of `shape`: `rows` its first dimension, `cols`
/// the product of the others, an input's own dimension `own`, no declared shape the
/// parameter's own.
pub fn shape_for(info: &InputInfo, shape: &[usize], own: usize) -> Vec<usize> {
    match &info.shape {
        Shape::Dims(d) => d
            .iter()
            .map(|n| match n.as_str() {
                "rows" => shape.first().copied().unwrap_or(1),
                "cols" => shape.iter().skip(1).product(),
                _ => own,
            })
            .collect(),
        _ => shape.to_vec(),
    }
}

/// The declared shape of an input as text, with what its dimensions must be for a parameter
/// of `rows` x `cols` (`[batch, 5]`), for error messages.
fn expected_text(info: &InputInfo, bp: &BoundParam) -> String {
    match &info.shape {
        Shape::Dims(d) => {
            let dims: Vec<String> = d
                .iter()
                .map(|n| match n.as_str() {
                    "rows" => bp.rows.to_string(),
                    "cols" => bp.cols.to_string(),
                    other => format!("{other} (any)"),
                })
                .collect();
            format!("[{}]", dims.join(", "))
        }
        _ => format!("{:?} (the parameter's shape)", bp.shape),
    }
}

/// Checks named inputs against the program's declarations and the bound members, and
/// arranges them by member and input. Every misuse is an error naming the parameter and
/// the input: an unknown parameter or input, one given twice, a shape that does not fit, a
/// wrong number of elements, an input for a parameter stepped as a batch of matrices.
pub fn collect<'a, T>(
    m: &Module,
    bound: &[BoundParam],
    named: &[Named<'a, T>],
) -> Result<StepInputs<'a, T>, InterpError> {
    let mut out = StepInputs::none(bound.len(), m.inputs.len());
    if named.is_empty() {
        return Ok(out);
    }
    for &(param, input, shape, data) in named {
        let Some(i) = bound.iter().position(|bp| bp.name == param) else {
            let batched = bound.iter().any(|bp| bp.name.starts_with(&format!("{param}[")));
            return Err(if batched {
                InterpError::InputBatched { param: param.into() }
            } else {
                InterpError::InputParam { param: param.into() }
            });
        };
        let bp = &bound[i];
        let Some(j) = m.inputs.iter().position(|x| x.name == input) else {
            let declared = m.inputs.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(InterpError::UnknownInput {
                param: param.into(),
                input: input.into(),
                declared: if declared.is_empty() { "none".into() } else { declared },
            });
        };
        if out.members[i][j].is_some() {
            return Err(InterpError::DuplicateInput { param: param.into(), input: input.into() });
        }
        let info = &m.inputs[j];
        let fits = match &info.shape {
            Shape::Dims(d) => {
                shape.len() == d.len()
                    && d.iter().zip(shape).all(|(n, s)| match n.as_str() {
                        "rows" => *s == bp.rows,
                        "cols" => *s == bp.cols,
                        _ => true,
                    })
            }
            _ => shape == bp.shape.as_slice(),
        };
        if !fits {
            return Err(InterpError::InputShape {
                param: param.into(),
                input: input.into(),
                shape: shape.to_vec(),
                expected: expected_text(info, bp),
            });
        }
        let elements = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
        if data.len() != elements {
            return Err(InterpError::Length {
                what: "input",
                param: format!("{param}.{input}"),
                shape: shape.to_vec(),
                expected: elements,
                got: data.len(),
            });
        }
        out.members[i][j] = Some(Given { shape, data });
    }
    // An input dimension named by several inputs of one parameter has one size.
    for (i, given) in out.members.iter().enumerate() {
        let mut sizes: Vec<(&str, usize, &str)> = Vec::new();
        for (j, g) in given.iter().enumerate() {
            let (Some(g), Shape::Dims(d)) = (g, &m.inputs[j].shape) else { continue };
            for (n, s) in d.iter().zip(g.shape) {
                if InputInfo::is_param_dim(n) {
                    continue;
                }
                match sizes.iter().find(|(x, _, _)| x == n) {
                    Some((_, size, other)) if size != s => {
                        return Err(InterpError::InputDim {
                            param: bound[i].name.clone(),
                            dim: n.clone(),
                            first: other.to_string(),
                            first_size: *size,
                            second: m.inputs[j].name.clone(),
                            second_size: *s,
                        })
                    }
                    Some(_) => {}
                    None => sizes.push((n, *s, &m.inputs[j].name)),
                }
            }
        }
    }
    Ok(out)
}

/// The inputs (indices into `Module::inputs`) an item of a plan reads.
pub fn item_inputs(item: &Item) -> Vec<usize> {
    let inputs = match item {
        Item::Kernel(k) => &k.inputs,
        Item::Lib(l) => &l.inputs,
    };
    inputs
        .iter()
        .filter_map(|(_, b)| match b {
            Buffer::Input(j) => Some(*j),
            _ => None,
        })
        .collect()
}

/// Which inputs member `bp`'s step reads, given whether each item's guard holds for it
/// (`holds(guard)`: `Some(true|false)` when the host knows it before the step, `None` when
/// it depends on the step's own reductions, which counts as read). Required inputs must come
/// with exactly these steps; optional ones are read only where they came.
pub fn read_by(fplan: &FuncPlan, n_inputs: usize, holds: impl Fn(crate::ir::Value) -> Option<bool>) -> Vec<bool> {
    let mut read = vec![false; n_inputs];
    for item in &fplan.items {
        let guard = match item {
            Item::Kernel(k) => k.guard,
            Item::Lib(l) => l.guard,
        };
        if guard.is_some_and(|g| holds(g) == Some(false)) {
            continue;
        }
        for j in item_inputs(item) {
            read[j] = true;
        }
    }
    read
}

/// The first required input that member `bp` reads this step (`read`, from [`read_by`]) but
/// was not given, as an error.
pub fn missing(
    m: &Module,
    bp: &BoundParam,
    read: &[bool],
    given: &[Option<Vec<usize>>],
    step: u64,
) -> Result<(), InterpError> {
    for (j, info) in m.inputs.iter().enumerate() {
        if read[j] && !info.optional && given.get(j).is_none_or(Option::is_none) {
            return Err(InterpError::MissingInput { param: bp.name.clone(), input: info.name.clone(), step });
        }
    }
    Ok(())
}
