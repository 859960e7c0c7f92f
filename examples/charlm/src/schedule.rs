//! The learning-rate schedule: linear warmup, then linear decay to zero over the rest of the
//! run, where the run's progress is the larger of the steps done and the time used (so a
//! time-budgeted run decays by the clock). Schedule-free optimizers get the warmup alone,
//! through their own `warmup_steps`.

use gdc_runtime::Program;

/// How the learning rates move over a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `lr * min(1, step / warmup)`, then, from the end of warmup, down linearly to zero at
    /// the end of the run.
    WarmupLinearDecay { warmup: usize },
    /// The optimizer schedules itself (schedule-free): the learning rates stay as set.
    Constant,
}

impl Schedule {
    /// The factor on every learning rate at `step` (1-based) of `steps`, when `progress`
    /// (0 at the start, 1 at the end: the larger of the step and time fractions) is done.
    pub fn factor(&self, step: usize, steps: usize, progress: f64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::WarmupLinearDecay { warmup } => {
                let warm = if warmup == 0 { 1.0 } else { (step as f64 / warmup as f64).min(1.0) };
                let start = (warmup as f64 / steps.max(1) as f64).min(0.5);
                let decay = ((1.0 - progress) / (1.0 - start)).clamp(0.0, 1.0);
                warm * decay
            }
        }
    }
}

/// Whether `program` is schedule-free: it keeps the fast iterate `z` and a `warmup_steps`
/// hyperparameter (the parameter it holds is then y, not the point to evaluate at).
pub fn is_schedule_free(program: &Program) -> bool {
    let module = &program.plan().module;
    module.states.iter().any(|s| s.name == "z") && module.hypers.iter().any(|h| h.name.ends_with("warmup_steps"))
}

/// Whether hyperparameter `name` is a learning rate the schedule scales (`lr`, `muon.lr`).
pub fn is_lr(name: &str) -> bool {
    name == "lr" || name.ends_with(".lr")
}
