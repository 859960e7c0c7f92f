//! The kernel plan: what every backend consumes. For each update variant (and its state
//! initialisers) it says which scalars the host computes once per step (`host`), which once
//! per parameter (`param`: they depend on the shape), and the ordered items of the step:
//! fused elementwise kernels (with their reductions) and library calls (matrix products,
//! transposes), each possibly guarded by a boolean scalar (`every`, `if`), and what the host
//! computes once after every parameter's step (`after`: the globals an update assigns).
//!
//! Data moves between items only through buffers (the parameter, the gradient, state,
//! temporaries) and reduction slots; a kernel reads each of its input buffers once and
//! writes each output buffer once. Scalars that depend on a reduction ("device scalars")
//! are recomputed by each kernel that needs them, from the slots.
//!
//! Every update plan ends with its gradient check (`check.rs`): a kernel that counts the
//! gradient's non-finite elements, run on its own before a step when the runtime is asked to
//! skip or refuse such steps, and never within the step.

pub mod check;
pub mod folds;
pub mod fuse;
pub mod hoist;
pub mod locality;
pub mod print;
pub mod reuse;

use crate::ir::{Func, Module, Pattern, Value};
use gdc_dsl::types::Shape;

/// Where a scalar is computed (tensors are always computed by kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Once per step on the host: constants, hyperparameters, `step`, globals.
    Host,
    /// Once per parameter per step on the host: depends on the parameter's shape.
    Param,
    /// Inside kernels: depends on a reduction or on scalar state.
    Device,
    /// A tensor, a reduction or a store: part of a kernel or a library call.
    Kernel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    Param,
    Grad,
    State(usize),
    Temp(usize),
    /// Input `i` of the step (`Module::inputs`), read-only, lent by the training code.
    Input(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub id: usize,
    pub guard: Option<Value>,
    /// The iteration space: every body value has this shape or a smaller one.
    pub domain: Shape,
    /// Values read from buffers when the kernel starts.
    pub inputs: Vec<(Value, Buffer)>,
    /// Device scalars the kernel computes first, in order.
    pub scalars: Vec<Value>,
    /// Elementwise instructions, reductions and stores, in order.
    pub body: Vec<Value>,
    /// Values written to buffers when the kernel ends (stores and temporaries).
    pub outputs: Vec<Output>,
    /// Full reductions whose results go to slots for later items.
    pub reductions: Vec<Value>,
}

/// A buffer a kernel writes when it ends; a store guarded by a host scalar (`if momentum
/// != 0 { buf = ... }`) is a conditional write inside the kernel, not a kernel of its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Output {
    pub value: Value,
    pub buffer: Buffer,
    pub guard: Option<Value>,
}

/// A library call: one matrix instruction over materialised operands.
#[derive(Clone, Debug, PartialEq)]
pub struct LibCall {
    pub id: usize,
    pub guard: Option<Value>,
    pub scalars: Vec<Value>,
    pub inst: Value,
    pub inputs: Vec<(Value, Buffer)>,
    pub output: Buffer,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Kernel(Kernel),
    Lib(LibCall),
}

/// The plan of one function (an update step or the state initialisers).
#[derive(Clone, Debug, PartialEq)]
pub struct FuncPlan {
    pub host: Vec<Value>,
    pub param: Vec<Value>,
    pub items: Vec<Item>,
    /// The shape of each temporary buffer.
    pub temps: Vec<Shape>,
    /// The gradient check's item (update plans only; see `check.rs`).
    pub check: Option<GradientCheck>,
    /// What the host computes once after every item of the step has run for every
    /// parameter (update plans only): the globals the update stores and the scalars their
    /// values need (`hoist::after_step`).
    pub after: Vec<Value>,
}

/// Where an update plan's gradient check is: its kernel item, and the reduction that
/// counts the gradient's non-finite elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientCheck {
    pub item: usize,
    pub count: Value,
}

/// What a pass over the parameters runs of a function plan: the step (every item but the
/// gradient check), or the gradient check alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Step,
    Check,
}

impl FuncPlan {
    /// The items `pass` runs, with their indices in `items`, in order.
    pub fn items_of(&self, pass: Pass) -> impl Iterator<Item = (usize, &Item)> {
        let check = self.check.map(|c| c.item);
        self.items.iter().enumerate().filter(move |(ii, _)| (Some(*ii) == check) == (pass == Pass::Check))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VariantPlan {
    pub pattern: Pattern,
    pub init: FuncPlan,
    pub update: FuncPlan,
}

/// The plan of a whole optimizer; it owns the optimised IR its items refer to.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub module: Module,
    /// The `prepare` function's instructions, all on the host, in order.
    pub prepare: Vec<Value>,
    pub variants: Vec<VariantPlan>,
}

/// Schedules an optimised module into a plan.
pub fn build(mut module: Module) -> Result<Plan, String> {
    let prepare = module.prepare.values().collect();
    let bf16: Vec<bool> = module.states.iter().map(|s| s.bf16).collect();
    let mut variants = Vec::new();
    for v in &mut module.variants {
        let init = plan_func(&v.init, &bf16).map_err(|e| format!("init of {:?}: {e}", v.pattern))?;
        let mut update = plan_func(&v.update, &bf16).map_err(|e| format!("update of {:?}: {e}", v.pattern))?;
        check::add(&mut v.update, &mut update, v.pattern.param_shape());
        variants.push(VariantPlan { pattern: v.pattern, init, update });
    }
    Ok(Plan { module, prepare, variants })
}

/// `bf16`: which states are stored as bfloat16 (a value stored there reads back rounded).
fn plan_func(func: &Func, bf16: &[bool]) -> Result<FuncPlan, String> {
    let phases = hoist::phases(func);
    let (host, param) = hoist::host_blocks(func, &phases);
    let after = hoist::after_step(func, &phases);
    let (mut items, mut temps) = fuse::fuse(func, &phases, bf16)?;
    reuse::share_temps(&mut items, &mut temps);
    Ok(FuncPlan { host, param, items, temps, check: None, after })
}
