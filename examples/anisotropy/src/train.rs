//! One training run: a two-layer linear model F·G (candle `Var`s) fitted by a compiled gdc
//! optimizer on fresh minibatches, with the exact excess risk tracked every step. A program
//! with per-step inputs gets them as the second-order methods' own training code makes them,
//! from labels sampled from the model (see [`Statistics`]).

use crate::linalg::Mat;
use crate::problem::{Dims, Problem};
use candle_core::{Device, Tensor, Var};
use gdc_candle::{GdcOptimizer, NamedVar, Role};
use gdc_runtime::{Backend, Options, Program};
use gdc_train_kit::Rng;
use serde_json::json;

/// What one run does.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub dims: Dims,
    pub kappa: f64,
    pub lr: f64,
    /// Hyperparameters set besides `lr` (momentum, weight decay, ...).
    pub hypers: Vec<(String, f64)>,
    pub seed: u64,
    pub steps: usize,
    pub batch: usize,
    /// The target: excess risk ≤ `target_rel` × the initial excess risk.
    pub target_rel: f64,
    /// The feature target: subspace distance ≤ `distance_target`.
    pub distance_target: f64,
    /// The risk curve keeps every `log_every`-th step (and step 0 and the last).
    pub log_every: usize,
}

/// What one run gave.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub initial_risk: f64,
    pub final_risk: f64,
    /// The first step whose excess risk is at or under the target; `None`: not within the budget.
    pub steps_to_target: Option<usize>,
    pub initial_distance: f64,
    pub final_distance: f64,
    /// The risk went non-finite or past 1e6 × its initial value; the run stopped there.
    pub diverged: bool,
    /// The first step whose subspace distance is at or under the distance target.
    pub steps_to_distance: Option<usize>,
    /// `(step, excess risk)`, subsampled.
    pub curve: Vec<(usize, f64)>,
    /// `(step, subspace distance)` at the same steps.
    pub distance_curve: Vec<(usize, f64)>,
    /// The last minibatch loss.
    pub last_loss: f64,
    pub steps_done: usize,
}

impl RunResult {
    /// Steps to target, counting a miss as the budget.
    pub fn steps_or_budget(&self, budget: usize) -> usize {
        self.steps_to_target.unwrap_or(budget)
    }

    pub fn to_json(&self, cfg: &RunConfig, optimizer: &str) -> serde_json::Value {
        let finite = |x: f64| if x.is_finite() { json!(x) } else { json!(null) };
        json!({
            "optimizer": optimizer,
            "kappa": cfg.kappa,
            "lr": cfg.lr,
            "hypers": cfg.hypers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "seed": cfg.seed,
            "steps": cfg.steps,
            "batch": cfg.batch,
            "target_rel": cfg.target_rel,
            "initial_risk": finite(self.initial_risk),
            "final_risk": finite(self.final_risk),
            "steps_to_target": self.steps_to_target,
            "reached_target": self.steps_to_target.is_some(),
            "initial_distance": self.initial_distance,
            "final_distance": self.final_distance,
            "distance_target": cfg.distance_target,
            "steps_to_distance": self.steps_to_distance,
            "distance_curve": self.distance_curve.iter().map(|&(s, d)| json!([s, finite(d)])).collect::<Vec<_>>(),
            "diverged": self.diverged,
            "curve_every": cfg.log_every,
            "curve": self.curve.iter().map(|&(s, r)| json!([s, finite(r)])).collect::<Vec<_>>(),
        })
    }
}

/// How often Sophia-G's Hessian sample is refreshed (train_sophiag.py's `hess_interval`).
pub const HESSIAN_EVERY: usize = 10;

/// What a program's per-step inputs are here, by their declared shapes: `[batch, cols]` a
/// layer's input activations and `[batch, rows]` the gradient at its output (K-FAC's `a` and
/// `s`), and an optional input shaped like the parameter a gradient taken with sampled labels
/// (Sophia-G's `h`). Labels are sampled from the model's own predictive distribution, the
/// Gaussian N(F·G·x, ½·I) whose negative log-likelihood is the loss up to a constant, as the
/// K-FAC and Sophia authors' training code samples labels from the model: with ε ~ N(0, ½·I)
/// per output, the gradient at the output is s₂ = −(2/B)·ε, at the hidden layer s₁ = s₂·F, and
/// the sampled-label gradients are s₂ᵀ·(x·Gᵀ) for F and s₁ᵀ·x for G.
struct Statistics {
    /// Inputs over `[batch, cols]` (activations) and `[batch, rows]` (output gradients).
    acts: Vec<String>,
    outs: Vec<String>,
    /// Optional inputs like the parameter (sampled-label gradients).
    samples: Vec<String>,
}

impl Statistics {
    fn of(program: &Program) -> Statistics {
        use gdc_dsl::types::Shape;
        let mut st = Statistics { acts: Vec::new(), outs: Vec::new(), samples: Vec::new() };
        for x in &program.plan().module.inputs {
            match &x.shape {
                Shape::Dims(d) if d.len() == 2 && d[1] == "cols" => st.acts.push(x.name.clone()),
                Shape::Dims(d) if d.len() == 2 && d[1] == "rows" => st.outs.push(x.name.clone()),
                Shape::Like if x.optional => st.samples.push(x.name.clone()),
                _ => {}
            }
        }
        st
    }

    fn none(&self) -> bool {
        self.acts.is_empty() && self.outs.is_empty() && self.samples.is_empty()
    }
}

/// One sampled-label pass at the current F, G on inputs `x` [batch, dx]: for F and for G, the
/// layer's input and the gradient at its output, and the sampled-label gradient.
struct Sampled {
    layer_in: [Mat; 2],
    out_grad: [Mat; 2],
    grad: [Mat; 2],
}

fn sample_labels(f: &Mat, g: &Mat, x: &Mat, rng: &mut Rng) -> Sampled {
    let b = x.rows as f64;
    let h = x.matmul(&g.t());
    let s2 = Mat::from_fn(x.rows, f.rows, |_, _| -2.0 / b * rng.normal() * 0.5f64.sqrt());
    let s1 = s2.matmul(f);
    let grad = [s2.t().matmul(&h), s1.t().matmul(x)];
    Sampled { layer_in: [h, x.clone()], out_grad: [s2, s1], grad }
}

fn read(var: &Var, rows: usize, cols: usize) -> Result<Mat, String> {
    let v: Vec<f32> = var.as_tensor().flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string())?;
    Ok(Mat::from_f32(rows, cols, &v))
}

/// Trains F [dy, k] and G [k, dx] from a LeCun-normal start (entries N(0, 1/fan_in)) with the
/// loss (1/B)·Σ_b ‖F·G·x_b − y_b‖², one fresh minibatch per step. `on_step(step, loss)` is
/// called after every step. The problem instance, the start and the data stream all follow
/// `cfg.seed`.
pub fn run(program: &Program, cfg: &RunConfig, mut on_step: impl FnMut(usize, f64)) -> Result<RunResult, String> {
    let Dims { dx, k, dy, .. } = cfg.dims;
    let problem = Problem::new(cfg.dims, cfg.kappa, cfg.seed);
    let mut rng = Rng::new(cfg.seed ^ 0xA5A5_5A5A_1234_5678);
    let dev = Device::Cpu;
    let g0: Vec<f32> = (0..k * dx).map(|_| (rng.normal() / (dx as f64).sqrt()) as f32).collect();
    let f0: Vec<f32> = (0..dy * k).map(|_| (rng.normal() / (k as f64).sqrt()) as f32).collect();
    let ce = |e: candle_core::Error| e.to_string();
    let g = Var::from_vec(g0, (k, dx), &dev).map_err(ce)?;
    let f = Var::from_vec(f0, (dy, k), &dev).map_err(ce)?;
    // One worker thread: a step on two tiny matrices is microseconds, less than waking a
    // pool, and runs go in parallel (--jobs) instead.
    let mut opt = GdcOptimizer::with_options(
        program,
        vec![
            NamedVar::new("F", f.clone()).with_role(Role::Hidden),
            NamedVar::new("G", g.clone()).with_role(Role::Hidden),
        ],
        Options { backend: Backend::Cpu, threads: Some(1) },
    )
    .map_err(|e| e.to_string())?;
    opt.set_hyper("lr", cfg.lr).map_err(|e| e.to_string())?;
    for (name, value) in &cfg.hypers {
        opt.set_hyper(name, *value).map_err(|e| format!("hyperparameter `{name}`: {e}"))?;
    }

    let initial_risk = problem.excess_risk(&read(&f, dy, k)?, &read(&g, k, dx)?);
    let initial_distance = problem.subspace_distance(&read(&g, k, dx)?);
    let target = cfg.target_rel * initial_risk;
    let log_every = cfg.log_every.max(1);
    let mut curve = vec![(0, initial_risk)];
    let mut distance_curve = vec![(0, initial_distance)];
    let mut steps_to_distance = None;
    let mut steps_to_target = None;
    let mut risk = initial_risk;
    let mut last_loss = f64::NAN;
    let mut diverged = false;
    let mut steps_done = 0;
    let stats = Statistics::of(program);
    // Its own stream, so the data a run sees does not depend on the optimizer.
    let mut label_rng = Rng::new(cfg.seed ^ 0x5EED_1AB5);
    // Sophia-G's sample for the next step (taken after the step of every HESSIAN_EVERY-th).
    let mut hessian: Option<[Mat; 2]> = None;
    for step in 1..=cfg.steps {
        let (x, y) = problem.sample(cfg.batch, &mut rng);
        let xm = (!stats.none()).then(|| Mat::from_f32(cfg.batch, dx, &x));
        let x = Tensor::from_vec(x, (cfg.batch, dx), &dev).map_err(ce)?;
        let y = Tensor::from_vec(y, (cfg.batch, dy), &dev).map_err(ce)?;
        let pred = x.matmul(&g.as_tensor().t().map_err(ce)?).and_then(|h| h.matmul(&f.as_tensor().t()?)).map_err(ce)?;
        let loss = (pred - y)
            .and_then(|d| d.sqr())
            .and_then(|d| d.sum_all())
            .and_then(|s| s / cfg.batch as f64)
            .map_err(ce)?;
        last_loss = loss.to_scalar::<f32>().map_err(ce)? as f64;
        if stats.none() {
            opt.backward_step(&loss).map_err(|e| e.to_string())?;
        } else {
            let grads = loss.backward().map_err(ce)?;
            let needed = opt.optimizer_mut().inputs_next_step().map_err(|e| e.to_string())?;
            let mut given: Vec<(&str, String, Tensor)> = Vec::new();
            if !needed.is_empty() {
                let xm = xm.as_ref().ok_or("no inputs kept")?;
                let sampled = sample_labels(&read(&f, dy, k)?, &read(&g, k, dx)?, xm, &mut label_rng);
                for (li, name) in ["F", "G"].into_iter().enumerate() {
                    for (names, m) in [(&stats.acts, &sampled.layer_in[li]), (&stats.outs, &sampled.out_grad[li])] {
                        for n in names.iter().filter(|n| needed.iter().any(|(p, i)| p == name && i == *n)) {
                            let t = Tensor::from_vec(m.to_f32(), (m.rows, m.cols), &dev).map_err(ce)?;
                            given.push((name, n.clone(), t));
                        }
                    }
                }
            }
            if let Some(h) = hessian.take() {
                for (li, name) in ["F", "G"].into_iter().enumerate() {
                    for n in &stats.samples {
                        let t = Tensor::from_vec(h[li].to_f32(), (h[li].rows, h[li].cols), &dev).map_err(ce)?;
                        given.push((name, n.clone(), t));
                    }
                }
            }
            let inputs: Vec<(&str, &str, &Tensor)> = given.iter().map(|(p, n, t)| (*p, n.as_str(), t)).collect();
            opt.step_with_inputs(&grads, &inputs).map_err(|e| e.to_string())?;
            if !stats.samples.is_empty() && step % HESSIAN_EVERY == HESSIAN_EVERY - 1 {
                let xm = xm.as_ref().ok_or("no inputs kept")?;
                hessian = Some(sample_labels(&read(&f, dy, k)?, &read(&g, k, dx)?, xm, &mut label_rng).grad);
            }
        }
        risk = problem.excess_risk(&read(&f, dy, k)?, &read(&g, k, dx)?);
        steps_done = step;
        if steps_to_target.is_none() && risk <= target {
            steps_to_target = Some(step);
        }
        let distance = problem.subspace_distance(&read(&g, k, dx)?);
        if steps_to_distance.is_none() && distance <= cfg.distance_target {
            steps_to_distance = Some(step);
        }
        if step % log_every == 0 || step == cfg.steps {
            curve.push((step, risk));
            distance_curve.push((step, distance));
        }
        on_step(step, last_loss);
        if !risk.is_finite() || risk > 1e6 * initial_risk {
            diverged = true;
            if curve.last().map(|c| c.0) != Some(step) {
                curve.push((step, risk));
                distance_curve.push((step, 1.0));
            }
            break;
        }
    }
    let final_distance = if diverged { 1.0 } else { problem.subspace_distance(&read(&g, k, dx)?) };
    let final_risk = if diverged { f64::INFINITY } else { risk };
    Ok(RunResult {
        initial_risk,
        final_risk,
        steps_to_target,
        initial_distance,
        final_distance,
        diverged,
        steps_to_distance,
        curve,
        distance_curve,
        last_loss,
        steps_done,
    })
}
