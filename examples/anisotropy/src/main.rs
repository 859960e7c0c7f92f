//! The anisotropy experiment's command line: sweeps, evaluates and reports one or all of the
//! optimizers on the planted two-layer linear problem across condition numbers κ.

use anisotropy::experiment::{
    default_grid_start, default_hypers, log_grid, optimizer_name, run_optimizer, OptimizerSpec, Settings,
};
use anisotropy::problem::Dims;
use anisotropy::report;
use clap::{ArgGroup, Parser};
use gdc_train_kit::load_optimizer;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Do layer-wise preconditioners (Shampoo, SOAP, Muon) learn a planted feature subspace as fast
/// under anisotropic inputs as under isotropic ones, where SGD and Adam slow down with κ?
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
#[command(group(ArgGroup::new("which").required(true).args(["optimizer", "all"])))]
struct Args {
    /// A `.gd` optimizer file to run (repeatable).
    #[arg(long, value_name = "FILE")]
    optimizer: Vec<PathBuf>,
    /// Run the whole experiment: sgd, adam, shampoo, soap, muon, kfac and sophia_g from
    /// --optimizers-dir.
    #[arg(long)]
    all: bool,
    /// Where --all finds the optimizers.
    #[arg(long, default_value = "examples/optimizers")]
    optimizers_dir: PathBuf,
    /// Condition numbers of the input covariance Σ.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    kappas: Vec<f64>,
    /// Step budget of every run.
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Evaluation seeds: 0..N, at the chosen lr.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Tuning seeds of the lr sweep: 1000..1000+N (disjoint from the evaluation seeds).
    #[arg(long, default_value_t = 2)]
    tune_seeds: u64,
    /// The lr grid for every optimizer (comma-separated); default: 8 points a factor √10
    /// apart, from 1e-4 (3.2e-4 for sgd, 1e-3 for shampoo).
    #[arg(long, value_delimiter = ',')]
    lr_grid: Option<Vec<f64>>,
    /// Points of the default lr grid.
    #[arg(long, default_value_t = 8)]
    grid_points: usize,
    /// A hyperparameter besides lr for every optimizer run, as NAME=VALUE (repeatable;
    /// overrides the experiment's defaults).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_hyper)]
    hyper: Vec<(String, f64)>,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Input dimension.
    #[arg(long, default_value_t = 32)]
    dx: usize,
    /// Feature dimension (rows of G).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Output dimension.
    #[arg(long, default_value_t = 8)]
    dy: usize,
    /// Standard deviation of the label noise.
    #[arg(long, default_value_t = 0.001)]
    noise: f64,
    /// Target: excess risk ≤ TARGET × the initial excess risk.
    #[arg(long, default_value_t = 1e-5)]
    target: f64,
    /// Feature target: subspace distance ≤ this (reported beside the risk target).
    #[arg(long, default_value_t = 0.1)]
    distance_target: f64,
    /// Keep every N-th step of each loss curve in the log.
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// A short version: 600 steps, κ ∈ {1, 100}, 3 seeds, 1 tuning seed, 5 lrs.
    #[arg(long)]
    quick: bool,
    /// Output directory: log.json, anisotropy.md, anisotropy-*.png.
    #[arg(long, default_value = "runs/anisotropy")]
    out: PathBuf,
}

fn parse_hyper(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let value: f64 = value.trim().parse().map_err(|_| format!("`{value}` is not a number"))?;
    Ok((name.trim().to_string(), value))
}

fn check(args: &Args) -> Result<(), String> {
    let positive = |name: &str, x: usize| if x == 0 { Err(format!("--{name} must be at least 1")) } else { Ok(()) };
    positive("steps", args.steps)?;
    positive("batch", args.batch)?;
    positive("dx", args.dx)?;
    positive("k", args.k)?;
    positive("dy", args.dy)?;
    positive("grid-points", args.grid_points)?;
    positive("jobs", args.jobs)?;
    if args.seeds == 0 || args.tune_seeds == 0 {
        return Err("--seeds and --tune-seeds must be at least 1".into());
    }
    if args.k > args.dx {
        return Err(format!("--k ({}) cannot exceed --dx ({})", args.k, args.dx));
    }
    if let Some(k) = args.kappas.iter().find(|&&k| !(k >= 1.0 && k.is_finite())) {
        return Err(format!("κ = {k}: condition numbers are finite and at least 1"));
    }
    if args.kappas.is_empty() {
        return Err("--kappas is empty".into());
    }
    if !(args.target > 0.0 && args.target < 1.0) {
        return Err(format!("--target {} must be in (0, 1)", args.target));
    }
    if !(args.distance_target > 0.0 && args.distance_target < 1.0) {
        return Err(format!("--distance-target {} must be in (0, 1)", args.distance_target));
    }
    if !(args.noise >= 0.0 && args.noise.is_finite()) {
        return Err(format!("--noise {} must be finite and non-negative", args.noise));
    }
    if let Some(lr) = args.lr_grid.iter().flatten().find(|&&lr| !(lr > 0.0 && lr.is_finite())) {
        return Err(format!("learning rate {lr} in --lr-grid must be positive"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.steps = args.steps.min(600);
        args.kappas = vec![1.0, 100.0];
        args.seeds = args.seeds.min(3);
        args.tune_seeds = 1;
        args.grid_points = args.grid_points.min(5);
    }
    if let Err(e) = check(&args) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn specs(args: &Args) -> Result<Vec<OptimizerSpec>, String> {
    let paths: Vec<PathBuf> = if args.all {
        ["sgd", "adam", "shampoo", "soap", "muon", "kfac", "sophia_g"]
            .iter()
            .map(|n| args.optimizers_dir.join(format!("{n}.gd")))
            .collect()
    } else {
        args.optimizer.clone()
    };
    let mut out = Vec::new();
    for path in paths {
        let program = load_optimizer(&path)?;
        let name = optimizer_name(&path);
        let mut hypers = default_hypers(&name);
        for (k, v) in &args.hyper {
            hypers.retain(|(n, _)| n != k);
            hypers.push((k.clone(), *v));
        }
        let grid = match &args.lr_grid {
            Some(g) => g.clone(),
            None if args.quick => log_grid(default_grid_start(&name) * 10f64.sqrt(), args.grid_points),
            None => log_grid(default_grid_start(&name), args.grid_points),
        };
        // Refuse an unknown hyperparameter now, not in the middle of the sweep.
        let probe = gdc_runtime::Optimizer::new(&program, &[gdc_runtime::ParamSpec::new("p", &[2, 2])])
            .map_err(|e| format!("error: {}: {e}", path.display()))?;
        let mut probe = probe;
        for (k, v) in hypers.iter().chain([("lr".to_string(), 1e-3)].iter()) {
            probe.set_hyper(k, *v).map_err(|e| format!("error: {}: hyperparameter `{k}`: {e}", path.display()))?;
        }
        out.push(OptimizerSpec { name, path, program, hypers, grid });
    }
    Ok(out)
}

fn run(args: &Args) -> Result<(), String> {
    let specs = specs(args)?;
    let settings = Settings {
        dims: Dims { dx: args.dx, k: args.k, dy: args.dy, noise: args.noise },
        kappas: args.kappas.clone(),
        steps: args.steps,
        batch: args.batch,
        target_rel: args.target,
        distance_target: args.distance_target,
        tune_seeds: (1000..1000 + args.tune_seeds).collect(),
        seeds: (0..args.seeds).collect(),
        log_every: args.log_every,
        jobs: args.jobs,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("error: cannot create {}: {e}", args.out.display()))?;
    let start = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for spec in &specs {
        outcomes.push(run_optimizer(spec, &settings)?);
    }
    let wall = start.elapsed().as_secs_f64();
    let command: Vec<String> = std::env::args().collect();
    let log = args.out.join("log.json");
    report::write_log(&log, &settings, &outcomes, json!({"wall_s": wall, "command": command.join(" ")}))?;
    let plots = report::plots(&args.out, "anisotropy", &settings, &outcomes)?;
    let md = format!(
        "# anisotropy\n\ncommand: `{}`\n\nwall time: {wall:.0} s\n\n{}\n## lr sweeps\n\n{}",
        command.join(" "),
        report::markdown(&settings, &outcomes),
        report::sweep_markdown(&settings, &outcomes)
    );
    let md_path = args.out.join("anisotropy.md");
    std::fs::write(&md_path, &md).map_err(|e| format!("error: cannot write {}: {e}", md_path.display()))?;
    println!("{}", report::markdown(&settings, &outcomes));
    println!(
        "wall time {wall:.0} s; wrote {}, {} and {} plots in {}",
        log.display(),
        md_path.display(),
        plots.len(),
        args.out.display()
    );
    Ok(())
}
