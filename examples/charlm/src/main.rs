//! `charlm`: trains a character-level transformer on real text with one `.gd` optimizer, or
//! compares several, writing JSON logs, loss curves and a Markdown table.

use charlm::data::{read_text, Corpus, DEFAULT_TEXT};
use charlm::model;
use charlm::report::{table, write_comparison_plots, write_run};
use charlm::train::{train, RunLog, TrainConfig};
use clap::Parser;
use gdc_runtime::Program;
use gdc_train_kit::{load_optimizer, Progress};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const FOUR: [&str; 4] = ["adamw.gd", "muon_adamw.gd", "soap.gd", "schedule_free_adamw.gd"];

#[derive(Parser, Debug)]
#[command(about = "Train a character-level transformer on real text with gdc optimizers")]
struct Args {
    /// The `.gd` optimizer (or policy) to train with.
    #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
    optimizer: Option<PathBuf>,
    /// Train with each of --optimizers in turn (same seed, data and steps) and write the
    /// comparison table and plots.
    #[arg(long)]
    compare: bool,
    /// The optimizers --compare runs (default: adamw, muon_adamw, soap, schedule_free_adamw
    /// from examples/optimizers).
    #[arg(long, num_args = 1.., value_name = "GD")]
    optimizers: Vec<PathBuf>,
    /// The text to train on: a file, or a directory whose files are read in name order.
    #[arg(long, default_value = DEFAULT_TEXT)]
    text: PathBuf,
    /// Where logs and plots go.
    #[arg(long, default_value = "runs/charlm")]
    out: PathBuf,
    /// Training steps (the most, when --time-budget is given; the schedule spans them).
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Stop each run after this many seconds of training; the schedule decays by the clock.
    #[arg(long, value_name = "SECONDS")]
    time_budget: Option<f64>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Context length in characters.
    #[arg(long, default_value_t = 64)]
    ctx: usize,
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Linear learning-rate warmup steps.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Validation (on the whole held-out tenth) every this many steps.
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A hyperparameter, `NAME=VALUE` (`lr=3e-3`, `muon.lr=0.02`); with --compare,
    /// `STEM:NAME=VALUE` sets it for one optimizer (`soap:lr=3e-3`), and a bare name for
    /// every optimizer that has it.
    #[arg(long = "set", value_name = "[STEM:]NAME=VALUE")]
    sets: Vec<String>,
    /// The run's name in file names (default: the optimizer file's stem, with its --set values).
    #[arg(long)]
    name: Option<String>,
    /// The comparison's file-name prefix.
    #[arg(long, default_value = "compare")]
    prefix: String,
}

/// A `--set`: for which optimizer (a file stem; `None`: every one that has it), the name, the value.
type Set = (Option<String>, String, f64);

fn parse_set(s: &str) -> Result<Set, String> {
    let (lhs, value) = s.split_once('=').ok_or_else(|| format!("--set {s}: expected [STEM:]NAME=VALUE"))?;
    let value: f64 = value.trim().parse().map_err(|_| format!("--set {s}: `{value}` is not a number"))?;
    let (stem, name) = match lhs.split_once(':') {
        Some((stem, name)) => (Some(stem.trim().to_string()), name.trim().to_string()),
        None => (None, lhs.trim().to_string()),
    };
    if name.is_empty() {
        return Err(format!("--set {s}: no hyperparameter name"));
    }
    Ok((stem, name, value))
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

fn hyper_names(program: &Program) -> Vec<String> {
    program.plan().module.hypers.iter().map(|h| h.name.clone()).collect()
}

/// The `--set`s that apply to the optimizer `stem`, checked against its hyperparameters.
fn sets_for(stem_name: &str, program: &Program, sets: &[Set], compare: bool) -> Result<Vec<(String, f64)>, String> {
    let names = hyper_names(program);
    let mut out = Vec::new();
    for (which, name, value) in sets {
        let explicit = which.as_deref() == Some(stem_name);
        if which.is_some() && !explicit {
            continue;
        }
        if !names.contains(name) {
            if explicit || !compare {
                return Err(format!(
                    "--set {name}: `{stem_name}` has no hyperparameter `{name}` (it has: {})",
                    names.join(", ")
                ));
            }
            continue;
        }
        out.push((name.clone(), *value));
    }
    Ok(out)
}

enum Failure {
    /// Bad input: flags, a `.gd` file, the text. Exit 2.
    Usage(String),
    /// Training or writing failed. Exit 1.
    Run(String),
}

fn run(args: &Args) -> Result<(), Failure> {
    let sets = args.sets.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>().map_err(Failure::Usage)?;
    let paths: Vec<PathBuf> = if args.compare {
        if args.optimizers.is_empty() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../optimizers");
            FOUR.iter().map(|f| dir.join(f)).collect()
        } else {
            args.optimizers.clone()
        }
    } else {
        args.optimizer.iter().cloned().collect()
    };
    let mut runs = Vec::new();
    for path in &paths {
        let program = load_optimizer(path).map_err(Failure::Usage)?;
        let name = stem(path);
        let own = sets_for(&name, &program, &sets, args.compare).map_err(Failure::Usage)?;
        runs.push((name, program, own));
    }
    for (which, name, _) in &sets {
        let known_stem = which.as_ref().is_none_or(|w| runs.iter().any(|r| &r.0 == w));
        let used = runs.iter().any(|r| r.2.iter().any(|(n, _)| n == name));
        if !known_stem || !used {
            return Err(Failure::Usage(format!("--set {name}: no optimizer being run takes it")));
        }
    }
    let (text, files) = read_text(&args.text).map_err(|e| Failure::Usage(e.0))?;
    let corpus = Corpus::new(&text, 0.1);
    eprintln!(
        "text: {} files, {} characters, vocabulary {}; {} for training, {} for validation",
        files.len(),
        corpus.train.len() + corpus.val.len(),
        corpus.vocab.len(),
        corpus.train.len(),
        corpus.val.len()
    );
    let model = model::Config {
        vocab: corpus.vocab.len(),
        d_model: args.d_model,
        heads: args.heads,
        layers: args.layers,
        ctx: args.ctx,
    };
    model.check().map_err(|e| Failure::Usage(e.0))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::Run(format!("cannot create {}: {e}", args.out.display())))?;
    let mut logs: Vec<RunLog> = Vec::new();
    for (name, program, own) in &runs {
        let label = match (&args.name, args.compare) {
            (Some(n), false) => n.clone(),
            _ if args.compare || own.is_empty() => name.clone(),
            _ => format!("{name}_{}", own.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("_")),
        };
        let cfg = TrainConfig {
            model,
            steps: args.steps,
            time_budget: args.time_budget,
            batch: args.batch,
            warmup: args.warmup,
            eval_every: args.eval_every,
            seed: args.seed,
            sets: own.clone(),
        };
        let progress = Progress::new(args.steps as u64, &label);
        let log = train(program, &label, &corpus, &cfg, Some(&progress)).map_err(|e| Failure::Run(e.0))?;
        progress.finish();
        write_run(&args.out, &log).map_err(|e| Failure::Run(e.0))?;
        let (median, _, _) = gdc_train_kit::median_spread(&log.step_ms);
        println!(
            "{label}: final validation loss {:.4} nats/char after {} steps, {:.1} s of training ({median:.1} ms/step, {} parameters){}",
            log.final_val(),
            log.steps(),
            log.seconds,
            log.params,
            if log.diverged { " — diverged" } else { "" }
        );
        logs.push(log);
    }
    if args.compare {
        write_comparison_plots(&args.out, &args.prefix, &logs).map_err(|e| Failure::Run(e.0))?;
        let t = table(&logs);
        let path = args.out.join(format!("{}.md", args.prefix));
        std::fs::write(&path, &t).map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
        println!("\n{t}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}
