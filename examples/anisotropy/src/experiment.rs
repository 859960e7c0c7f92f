//! The protocol: per optimizer and κ, a learning-rate sweep on tuning seeds, the lr chosen by
//! the median steps to target (then the median final risk), and evaluation seeds at that lr.

use crate::problem::Dims;
use crate::train::{run, RunConfig, RunResult};
use gdc_runtime::Program;
use gdc_train_kit::{median_spread, Progress};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// What every run of an experiment shares.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dims: Dims,
    pub kappas: Vec<f64>,
    pub steps: usize,
    pub batch: usize,
    pub target_rel: f64,
    /// The feature target: subspace distance ≤ this (reported, not used to pick the lr).
    pub distance_target: f64,
    pub tune_seeds: Vec<u64>,
    pub seeds: Vec<u64>,
    pub log_every: usize,
    /// Runs in flight at once (each on its own thread).
    pub jobs: usize,
}

/// An optimizer as the experiment runs it: its compiled program, the hyperparameters set
/// besides `lr`, and the lr grid of the sweep.
pub struct OptimizerSpec {
    pub name: String,
    pub path: PathBuf,
    pub program: Program,
    pub hypers: Vec<(String, f64)>,
    pub grid: Vec<f64>,
}

/// `n` log-spaced values from `lo`, a factor `√10` apart.
pub fn log_grid(lo: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo * 10f64.powf(i as f64 / 2.0)).collect()
}

/// The hyperparameters this experiment sets for a known optimizer (by file stem), besides lr:
/// SGD's momentum 0.9; Shampoo's roots every step (its Algorithm 1); no weight decay for SOAP,
/// Muon and Sophia-G (their defaults, 0.01, 0.1 and 0.1, would pull the model off the planted
/// solution); K-FAC's factors every step and eigenbases every 10 (the study's matrices are
/// small) with its reference's KL clip 1e-2; Sophia-G's `bs`, the examples behind each
/// Hessian sample, the default batch of 128.
pub fn default_hypers(name: &str) -> Vec<(String, f64)> {
    let h = |pairs: &[(&str, f64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    match name {
        "sgd" => h(&[("momentum", 0.9)]),
        "shampoo" => h(&[("precondition_frequency", 1.0)]),
        "soap" | "muon" => h(&[("weight_decay", 0.0)]),
        "kfac" => h(&[("tcov", 1.0), ("tinv", 10.0), ("kl_clip", 1e-2)]),
        "sophia_g" => h(&[("weight_decay", 0.0), ("bs", 128.0)]),
        _ => Vec::new(),
    }
}

/// The smallest lr of the default 8-point grid (a factor √10 apart) for a known optimizer.
pub fn default_grid_start(name: &str) -> f64 {
    match name {
        "sgd" => 1e-3 / 10f64.sqrt(),
        "shampoo" | "kfac" => 1e-3,
        _ => 1e-4,
    }
}

/// One lr of a sweep: its runs on the tuning seeds and their medians.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    pub lr: f64,
    pub runs: Vec<(u64, RunResult)>,
    pub median_steps: f64,
    pub median_final_risk: f64,
}

/// One κ of one optimizer.
#[derive(Clone, Debug)]
pub struct KappaOutcome {
    pub kappa: f64,
    pub sweep: Vec<SweepPoint>,
    pub chosen_lr: f64,
    pub runs: Vec<(u64, RunResult)>,
}

impl KappaOutcome {
    /// Median, min, max of steps to target (a miss counts as the budget) and how many reached it.
    pub fn steps(&self, budget: usize) -> ((f64, f64, f64), usize) {
        let xs: Vec<f64> = self.runs.iter().map(|(_, r)| r.steps_or_budget(budget) as f64).collect();
        (median_spread(&xs), self.runs.iter().filter(|(_, r)| r.steps_to_target.is_some()).count())
    }

    /// Median, min, max of steps to the distance target (a miss counts as the budget) and how
    /// many reached it.
    pub fn steps_to_distance(&self, budget: usize) -> ((f64, f64, f64), usize) {
        let xs: Vec<f64> = self.runs.iter().map(|(_, r)| r.steps_to_distance.unwrap_or(budget) as f64).collect();
        (median_spread(&xs), self.runs.iter().filter(|(_, r)| r.steps_to_distance.is_some()).count())
    }

    pub fn distance(&self) -> (f64, f64, f64) {
        median_spread(&self.runs.iter().map(|(_, r)| r.final_distance).collect::<Vec<_>>())
    }

    pub fn final_risk_rel(&self) -> (f64, f64, f64) {
        median_spread(&self.runs.iter().map(|(_, r)| r.final_risk / r.initial_risk).collect::<Vec<_>>())
    }
}

/// One optimizer over every κ.
#[derive(Clone, Debug)]
pub struct OptimizerOutcome {
    pub name: String,
    pub path: PathBuf,
    pub hypers: Vec<(String, f64)>,
    pub grid: Vec<f64>,
    pub kappas: Vec<KappaOutcome>,
    pub wall_s: f64,
}

/// Runs `configs` on up to `jobs` threads, in order of the results; `progress` counts steps.
fn run_all(
    program: &Program,
    configs: &[RunConfig],
    jobs: usize,
    progress: &Progress,
    done: &AtomicU64,
) -> Result<Vec<RunResult>, String> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunResult, String>>>> = Mutex::new(vec![None; configs.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, configs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(cfg) = configs.get(i) else { break };
                let mut last = 0;
                let r = run(program, cfg, |step, loss| {
                    let total = done.fetch_add((step - last) as u64, Ordering::Relaxed) + (step - last) as u64;
                    last = step;
                    if step % 25 == 0 {
                        progress.step(total, loss);
                    }
                });
                // A diverged run stops early; its remaining budget counts as done.
                done.fetch_add((cfg.steps - last) as u64, Ordering::Relaxed);
                if let Ok(mut guard) = results.lock() {
                    guard[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().map_err(|_| "a run panicked".to_string())?;
    results.into_iter().map(|r| r.unwrap_or_else(|| Err("a run did not finish".into()))).collect()
}

/// The sweep and the evaluation of `spec` at every κ of `settings`, with a progress bar.
pub fn run_optimizer(spec: &OptimizerSpec, settings: &Settings) -> Result<OptimizerOutcome, String> {
    let start = std::time::Instant::now();
    let per_kappa = spec.grid.len() * settings.tune_seeds.len() + settings.seeds.len();
    let total = (settings.kappas.len() * per_kappa * settings.steps) as u64;
    let progress = Progress::new(total, &spec.name);
    let done = AtomicU64::new(0);
    let config = |kappa: f64, lr: f64, seed: u64| RunConfig {
        dims: settings.dims,
        kappa,
        lr,
        hypers: spec.hypers.clone(),
        seed,
        steps: settings.steps,
        batch: settings.batch,
        target_rel: settings.target_rel,
        distance_target: settings.distance_target,
        log_every: settings.log_every,
    };
    let mut kappas = Vec::new();
    for &kappa in &settings.kappas {
        let configs: Vec<RunConfig> = spec
            .grid
            .iter()
            .flat_map(|&lr| settings.tune_seeds.iter().map(move |&seed| (lr, seed)))
            .map(|(lr, seed)| config(kappa, lr, seed))
            .collect();
        let results = run_all(&spec.program, &configs, settings.jobs, &progress, &done)?;
        let mut sweep = Vec::new();
        for (i, &lr) in spec.grid.iter().enumerate() {
            let n = settings.tune_seeds.len();
            let runs: Vec<(u64, RunResult)> =
                settings.tune_seeds.iter().copied().zip(results[i * n..(i + 1) * n].iter().cloned()).collect();
            let steps: Vec<f64> = runs.iter().map(|(_, r)| r.steps_or_budget(settings.steps) as f64).collect();
            let risks: Vec<f64> = runs.iter().map(|(_, r)| r.final_risk / r.initial_risk).collect();
            sweep.push(SweepPoint {
                lr,
                runs,
                median_steps: median_spread(&steps).0,
                median_final_risk: median_spread(&risks).0,
            });
        }
        let best = sweep
            .iter()
            .min_by(|a, b| {
                let key = |p: &SweepPoint| {
                    (p.median_steps, if p.median_final_risk.is_nan() { f64::INFINITY } else { p.median_final_risk })
                };
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            })
            .ok_or("the lr grid is empty")?;
        let chosen_lr = best.lr;
        let configs: Vec<RunConfig> = settings.seeds.iter().map(|&seed| config(kappa, chosen_lr, seed)).collect();
        let results = run_all(&spec.program, &configs, settings.jobs, &progress, &done)?;
        let outcome =
            KappaOutcome { kappa, sweep, chosen_lr, runs: settings.seeds.iter().copied().zip(results).collect() };
        let ((med, lo, hi), reached) = outcome.steps(settings.steps);
        let (dmed, dlo, dhi) = outcome.distance();
        progress.println(format!(
            "{:>8} κ={:<6} lr={:<9.3e} steps to target {:>6} [{}–{}] ({}/{} reached)  distance {:.2e} [{:.2e}–{:.2e}]",
            spec.name,
            kappa,
            chosen_lr,
            med,
            lo,
            hi,
            reached,
            outcome.runs.len(),
            dmed,
            dlo,
            dhi
        ));
        kappas.push(outcome);
    }
    progress.finish();
    Ok(OptimizerOutcome {
        name: spec.name.clone(),
        path: spec.path.clone(),
        hypers: spec.hypers.clone(),
        grid: spec.grid.clone(),
        kappas,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// The optimizer's name: its file stem.
pub fn optimizer_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "optimizer".into())
}
