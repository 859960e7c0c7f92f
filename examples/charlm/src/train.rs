//! One training run: a model built and seeded, a compiled optimizer bound to its variables by
//! role, steps on random windows of the training text with the learning-rate schedule, the
//! validation loss at regular steps, and the log of it all.

use crate::data::{sample_batch, Corpus};
use crate::error::{Error, Result};
use crate::eval::validation_loss;
use crate::model::{self, Model};
use crate::schedule::{is_lr, is_schedule_free, Schedule};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use gdc_candle::GdcOptimizer;
use gdc_runtime::Program;
use gdc_train_kit::{Progress, Rng};
use serde_json::json;
use std::time::Instant;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: model::Config,
    /// The most steps, and the length the schedule is laid over.
    pub steps: usize,
    /// Seconds of training (evaluation not counted) after which the run stops; the schedule
    /// then decays by the clock.
    pub time_budget: Option<f64>,
    pub batch: usize,
    pub warmup: usize,
    /// Validation every this many steps (and after the last).
    pub eval_every: usize,
    pub seed: u64,
    /// Hyperparameters set before the first step (`lr`, `muon.lr`, ...).
    pub sets: Vec<(String, f64)>,
}

/// A validation point.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPoint {
    pub step: usize,
    /// Training seconds so far (evaluation time not counted).
    pub seconds: f64,
    /// The mean training loss of the steps since the previous point (NaN at step 0).
    pub train_loss: f64,
    pub val_loss: f64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunLog {
    pub label: String,
    pub optimizer: String,
    pub schedule_free: bool,
    pub params: usize,
    /// The hyperparameters as set before the first step (learning rates before the schedule).
    pub hypers: Vec<(String, f64)>,
    /// Each step's training loss.
    pub train_losses: Vec<f32>,
    /// Each step's time in milliseconds: batch, forward, backward and optimizer step.
    pub step_ms: Vec<f64>,
    pub evals: Vec<EvalPoint>,
    /// Training seconds in all.
    pub seconds: f64,
    /// Set when the loss stopped being finite.
    pub diverged: bool,
}

impl RunLog {
    pub fn steps(&self) -> usize {
        self.train_losses.len()
    }

    /// The last validation loss.
    pub fn final_val(&self) -> f64 {
        self.evals.last().map_or(f64::NAN, |p| p.val_loss)
    }

    /// The validation loss of the last point at or before `seconds` of training.
    pub fn val_at_seconds(&self, seconds: f64) -> f64 {
        self.evals.iter().take_while(|p| p.seconds <= seconds + 1e-9).last().map_or(f64::NAN, |p| p.val_loss)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (median, lo, hi) = gdc_train_kit::median_spread(&self.step_ms);
        json!({
            "label": self.label,
            "optimizer": self.optimizer,
            "schedule_free": self.schedule_free,
            "params": self.params,
            "hypers": self.hypers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "steps": self.steps(),
            "seconds": self.seconds,
            "diverged": self.diverged,
            "final_val_loss": self.final_val(),
            "step_ms": { "median": median, "min": lo, "max": hi },
            "evals": self.evals.iter().map(|p| json!({
                "step": p.step, "seconds": p.seconds, "train_loss": p.train_loss, "val_loss": p.val_loss
            })).collect::<Vec<_>>(),
            "train_loss": self.train_losses,
            "step_ms_each": self.step_ms,
        })
    }
}

/// Trains a fresh model (seeded by `cfg.seed`, so every optimizer starts from the same
/// weights and sees the same batches) with `program` on `corpus`.
pub fn train(
    program: &Program,
    label: &str,
    corpus: &Corpus,
    cfg: &TrainConfig,
    progress: Option<&Progress>,
) -> Result<RunLog> {
    if cfg.steps == 0 || cfg.batch == 0 {
        return Err(Error("--steps and --batch must be positive".into()));
    }
    let ctx = cfg.model.ctx;
    if corpus.train.len() <= ctx + 1 || corpus.val.len() <= ctx + 1 {
        return Err(Error(format!("the text is too short for a context of {ctx} characters")));
    }
    let varmap = VarMap::new();
    let model = Model::new(cfg.model, &varmap)?;
    model::init(&varmap, cfg.model.layers, cfg.seed)?;
    let mut opt = GdcOptimizer::from_varmap(program, &varmap, model::role_of)?;
    let schedule_free = is_schedule_free(program);
    let schedule = if schedule_free {
        let warmup = opt.optimizer().hypers().into_iter().find(|h| h.0.ends_with("warmup_steps")).map(|h| h.0);
        if let Some(name) = warmup {
            opt.set_hyper(&name, cfg.warmup as f64)?;
        }
        Schedule::Constant
    } else {
        Schedule::WarmupLinearDecay { warmup: cfg.warmup }
    };
    for (name, value) in &cfg.sets {
        opt.set_hyper(name, *value)?;
    }
    let hypers: Vec<(String, f64)> = opt.optimizer().hypers().into_iter().map(|(n, _, v)| (n, v)).collect();
    let lrs: Vec<(String, f64)> = hypers.iter().filter(|(n, _)| is_lr(n)).cloned().collect();
    let beta1 = if schedule_free { opt.optimizer().hyper("beta1") } else { None };
    if schedule_free && beta1.is_none() {
        return Err(Error("a schedule-free optimizer without a `beta1` hyperparameter: cannot evaluate at x".into()));
    }
    let eval_batch = 64;
    let mut log = RunLog {
        label: label.to_string(),
        optimizer: program.name().to_string(),
        schedule_free,
        params: model::param_count(&varmap),
        hypers,
        train_losses: Vec::new(),
        step_ms: Vec::new(),
        evals: Vec::new(),
        seconds: 0.0,
        diverged: false,
    };
    let val0 = validation_loss(&model, &opt, &corpus.val, eval_batch, beta1)?;
    log.evals.push(EvalPoint { step: 0, seconds: 0.0, train_loss: f64::NAN, val_loss: val0 });
    let mut rng = Rng::new(cfg.seed ^ 0xC4A2_11B0);
    // Sophia-G's Hessian samples: their own stream, so the batches do not depend on them.
    let mut hessian = HessianSamples::of(program);
    let mut label_rng = Rng::new(cfg.seed ^ 0x50F1_A000);
    let mut since_eval = Vec::new();
    for step in 1..=cfg.steps {
        if cfg.time_budget.is_some_and(|b| log.seconds >= b) {
            break;
        }
        let by_steps = (step - 1) as f64 / cfg.steps as f64;
        let by_time = cfg.time_budget.map_or(0.0, |b| log.seconds / b);
        let factor = schedule.factor(step, cfg.steps, by_steps.max(by_time));
        let start = Instant::now();
        for (name, base) in &lrs {
            opt.set_hyper(name, base * factor)?;
        }
        let (inputs, targets) = sample_batch(&corpus.train, &mut rng, cfg.batch, ctx);
        let x = Tensor::from_vec(inputs, (cfg.batch, ctx), &Device::Cpu)?;
        let y = Tensor::from_vec(targets, (cfg.batch, ctx), &Device::Cpu)?;
        let loss = model.loss(&x, &y)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            log.diverged = true;
            if let Some(p) = progress {
                p.println(format!("{label}: the loss is {value} at step {step}; stopping"));
            }
            break;
        }
        match hessian.as_mut() {
            None => opt.backward_step(&loss)?,
            Some(h) => {
                let grads = loss.backward()?;
                let given = h.take();
                let inputs: Vec<(&str, &str, &Tensor)> =
                    given.iter().map(|(name, t)| (name.as_str(), h.input.as_str(), t)).collect();
                opt.step_with_inputs(&grads, &inputs)?;
                if step % HESSIAN_EVERY == HESSIAN_EVERY - 1 {
                    h.sample(&model, &varmap, &x, &mut label_rng)?;
                }
            }
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        log.seconds += ms / 1e3;
        log.step_ms.push(ms);
        log.train_losses.push(value);
        since_eval.push(value as f64);
        if let Some(p) = progress {
            p.step(step as u64, value as f64);
        }
        let last = step == cfg.steps || cfg.time_budget.is_some_and(|b| log.seconds >= b);
        if step % cfg.eval_every.max(1) == 0 || last {
            let val_loss = validation_loss(&model, &opt, &corpus.val, eval_batch, beta1)?;
            let train_loss = since_eval.iter().sum::<f64>() / since_eval.len() as f64;
            since_eval.clear();
            log.evals.push(EvalPoint { step, seconds: log.seconds, train_loss, val_loss });
            if let Some(p) = progress {
                p.println(format!(
                    "{label}: step {step:>5}  {:>7.1}s  train {train_loss:.4}  val {val_loss:.4}",
                    log.seconds
                ));
            }
        }
    }
    Ok(log)
}

/// How often a Hessian sample is taken (train_sophiag.py's `hess_interval`).
pub const HESSIAN_EVERY: usize = 10;

/// Sophia-G's input: for a program with an optional input shaped like the parameters, the
/// gradient of the mean cross-entropy of labels sampled from the model's own predictions,
/// clipped to global norm 1, taken after the step of every `HESSIAN_EVERY`-th iteration and
/// handed to the next step, as train_sophiag.py does (its `bs` is the batch's token count).
struct HessianSamples {
    input: String,
    next: Vec<(String, Tensor)>,
}

impl HessianSamples {
    fn of(program: &Program) -> Option<HessianSamples> {
        let m = &program.plan().module;
        let x = m.inputs.iter().find(|x| x.optional && x.shape == gdc_dsl::types::Shape::Like)?;
        Some(HessianSamples { input: x.name.clone(), next: Vec::new() })
    }

    fn take(&mut self) -> Vec<(String, Tensor)> {
        std::mem::take(&mut self.next)
    }

    fn sample(&mut self, model: &Model, varmap: &VarMap, x: &Tensor, rng: &mut Rng) -> Result<()> {
        let logits = model.forward(x)?;
        let (b, t, v) = logits.dims3()?;
        let flat = logits.reshape((b * t, v))?;
        let probs: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&flat.detach())?.to_vec2()?;
        let labels: Vec<u32> = probs
            .iter()
            .map(|row| {
                let mut u = rng.uniform() as f32;
                row.iter()
                    .position(|p| {
                        u -= p;
                        u <= 0.0
                    })
                    .unwrap_or(row.len() - 1) as u32
            })
            .collect();
        let labels = Tensor::from_vec(labels, b * t, &Device::Cpu)?;
        let grads = candle_nn::loss::cross_entropy(&flat, &labels)?.backward()?;
        let data = varmap.data().lock().map_err(|_| Error("the VarMap's lock is poisoned".into()))?;
        // In name order, so the norm's sum (and the run) does not depend on the map's order.
        let mut vars: Vec<(&String, &candle_core::Var)> = data.iter().collect();
        vars.sort_by_key(|(name, _)| *name);
        let mut named: Vec<(String, Tensor)> = Vec::new();
        let mut sq = 0.0f64;
        for (name, var) in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                named.push((name.clone(), g.clone()));
            }
        }
        // torch.nn.utils.clip_grad_norm_(params, 1.0), as train_sophiag.py clips.
        let scale = (1.0 / (sq.sqrt() + 1e-6)).min(1.0);
        self.next = named.into_iter().map(|(n, g)| Ok((n, (g * scale)?))).collect::<Result<_>>()?;
        Ok(())
    }
}
