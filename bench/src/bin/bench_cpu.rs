//! `bench-cpu`: one optimizer step on the CPU, timed in one process for gdc's CPU backend, a
//! hand-fused Rust loop with the same reads and writes, and (AdamW) candle-nn's AdamW, on the
//! same parameter sizes, interleaved so noise hits every contender alike; and gdc again under
//! the skip_step policy (the gradient check before every step), to price the check. Prints a
//! Markdown table (or JSON) of medians, min–max spread, effective bandwidth and speed ratios.

use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
use clap::{Parser, ValueEnum};
use gdc_bench::{Hand, Opt};
use gdc_runtime::bench::{bytes_per_step, fill_uniform, mixed_shapes, Stats};
use gdc_runtime::{Backend, NonFinite, Optimizer, Options, ParamSpec, Program};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "bench-cpu", about = "Time one optimizer step: gdc's CPU backend vs a hand-fused loop vs candle")]
struct Args {
    /// adamw, lion, sgd, adagrad, rmsprop, or all.
    #[arg(long, default_value = "all")]
    optimizer: String,
    /// Parameter sizes: one tensor of 2^24, 300 mixed tensors totalling 2^24, one of 2^20.
    #[arg(long, value_enum, default_value = "all")]
    config: ConfigArg,
    /// Timed steps per contender.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Untimed steps per contender first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Worker threads for every contender.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON object instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConfigArg {
    Single,
    Many,
    Small,
    All,
}

struct Config {
    name: &'static str,
    shapes: Vec<Vec<usize>>,
}

fn configs(which: ConfigArg) -> Vec<Config> {
    let all = [
        (ConfigArg::Single, "single", vec![vec![1usize << 24]]),
        (ConfigArg::Many, "many", mixed_shapes(1 << 24, 300)),
        (ConfigArg::Small, "small", vec![vec![1usize << 20]]),
    ];
    all.into_iter()
        .filter(|(c, _, _)| which == ConfigArg::All || which == *c)
        .map(|(_, name, shapes)| Config { name, shapes })
        .collect()
}

/// One step of a contender on its parameters, from the shared gradients.
type StepFn = Box<dyn FnMut(&mut Vec<Vec<f32>>, &[&[f32]]) -> Result<(), String>>;

/// One contender: its own copy of the parameters (and state) and its step.
struct Contender {
    name: &'static str,
    params: Vec<Vec<f32>>,
    run: StepFn,
    samples: Vec<f64>,
}

struct Row {
    optimizer: &'static str,
    config: &'static str,
    numel: usize,
    tensors: usize,
    bytes: u64,
    stats: Vec<(&'static str, Stats)>,
}

fn candle_adamw(
    shapes: &[Vec<usize>],
    params: &[Vec<f32>],
    grads: &[Vec<f32>],
    hypers: &[(String, f64)],
) -> Result<Contender, String> {
    let e = |e: candle_core::Error| e.to_string();
    let h = |name: &str| hypers.iter().find(|(n, _)| n == name).map(|(_, v)| *v).ok_or(format!("no hyper {name}"));
    let vars = shapes
        .iter()
        .zip(params)
        .map(|(s, p)| Var::from_slice(p, s.as_slice(), &Device::Cpu).map_err(e))
        .collect::<Result<Vec<Var>, String>>()?;
    let mut store = candle_core::backprop::GradStore::default();
    for ((v, s), g) in vars.iter().zip(shapes).zip(grads) {
        store.insert(v.as_tensor(), Tensor::from_slice(g, s.as_slice(), &Device::Cpu).map_err(e)?);
    }
    let config = ParamsAdamW {
        lr: h("lr")?,
        beta1: h("beta1")?,
        beta2: h("beta2")?,
        eps: h("eps")?,
        weight_decay: h("weight_decay")?,
    };
    let mut opt = AdamW::new(vars, config).map_err(e)?;
    Ok(Contender {
        name: "candle",
        params: Vec::new(),
        run: Box::new(move |_, _| opt.step(&store).map_err(|err| err.to_string())),
        samples: Vec::new(),
    })
}

fn bench(opt: Opt, config: &Config, args: &Args) -> Result<Row, String> {
    let program = Program::compile(&opt.source()?).map_err(|e| e.to_string())?;
    let specs: Vec<ParamSpec> =
        config.shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("t{i}"), s)).collect();
    let numels: Vec<usize> = specs.iter().map(ParamSpec::numel).collect();
    let bytes = bytes_per_step(program.plan(), &specs).map_err(|e| e.to_string())?;
    let options = Options { backend: Backend::Cpu, threads: Some(args.threads) };
    let mut gdc = Optimizer::with_options(&program, &specs, options).map_err(|e| e.to_string())?;
    for (name, value) in opt.bench_hypers() {
        gdc.set_hyper(name, *value).map_err(|e| e.to_string())?;
    }
    let hypers: Vec<(String, f64)> = gdc.hypers().into_iter().map(|(n, _, v)| (n, v)).collect();
    // The same optimizer under the skip_step policy: the gradient check runs before each step.
    let mut checked = Optimizer::with_options(&program, &specs, options).map_err(|e| e.to_string())?;
    for (name, value) in &hypers {
        checked.set_hyper(name, *value).map_err(|e| e.to_string())?;
    }
    checked.set_non_finite(NonFinite::SkipStep);
    let hand = Hand::new(opt, &numels, &hypers, args.threads)?;

    let mut seed = 0x5eed;
    let params: Vec<Vec<f32>> = numels.iter().map(|&n| fill_uniform(&mut seed, n, 1.0)).collect();
    let grads: Vec<Vec<f32>> = numels.iter().map(|&n| fill_uniform(&mut seed, n, 0.1)).collect();

    let mut contenders = vec![
        Contender {
            name: "gdc",
            params: params.clone(),
            run: Box::new(move |p, g| {
                gdc.step(&mut p.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(), g).map_err(|e| e.to_string())
            }),
            samples: Vec::new(),
        },
        Contender {
            name: "gdc skip_step",
            params: params.clone(),
            run: Box::new(move |p, g| {
                checked.step(&mut p.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(), g).map_err(|e| e.to_string())
            }),
            samples: Vec::new(),
        },
        {
            let mut hand = hand;
            Contender {
                name: "hand-fused",
                params: params.clone(),
                run: Box::new(move |p, g| hand.step(&mut p.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(), g)),
                samples: Vec::new(),
            }
        },
    ];
    if opt == Opt::AdamW {
        contenders.push(candle_adamw(&config.shapes, &params, &grads, &hypers)?);
    }
    drop(params);

    let grad_views: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    let n = contenders.len();
    for round in 0..args.warmup + args.repeats {
        // Each round starts with the next contender, so none always runs first.
        for k in 0..n {
            let c = &mut contenders[(round + k) % n];
            let t = Instant::now();
            (c.run)(&mut c.params, &grad_views)
                .map_err(|e| format!("{} {} {}: {e}", c.name, opt.name(), config.name))?;
            let dt = t.elapsed().as_secs_f64();
            if round >= args.warmup {
                c.samples.push(dt);
            }
        }
    }
    Ok(Row {
        optimizer: opt.name(),
        config: config.name,
        numel: numels.iter().sum(),
        tensors: numels.len(),
        bytes,
        stats: contenders.into_iter().map(|c| (c.name, Stats::from_samples(c.samples))).collect(),
    })
}

fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

fn cell(stats: Option<&Stats>) -> String {
    match stats {
        Some(s) => format!("{} ({}–{})", ms(s.median_s), ms(s.min_s), ms(s.max_s)),
        None => "–".into(),
    }
}

fn get<'a>(row: &'a Row, name: &str) -> Option<&'a Stats> {
    row.stats.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
}

/// How many times faster gdc is than `other` (their median time over gdc's).
fn speed_ratio(row: &Row, other: &str) -> Option<f64> {
    Some(get(row, other)?.median_s / get(row, "gdc")?.median_s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.threads == 0 || args.repeats == 0 {
        eprintln!("error: --threads and --repeats must be at least 1");
        return ExitCode::from(2);
    }
    let opts: Vec<Opt> = if args.optimizer == "all" {
        Opt::ALL.to_vec()
    } else {
        match Opt::parse(&args.optimizer) {
            Some(o) => vec![o],
            None => {
                let names: Vec<&str> = Opt::ALL.iter().map(|o| o.name()).collect();
                eprintln!("error: unknown optimizer `{}`; one of {}, or all", args.optimizer, names.join(", "));
                return ExitCode::from(2);
            }
        }
    };
    // candle sizes its worker pool from this variable when it first runs an operation.
    std::env::set_var("CANDLE_NUM_THREADS", args.threads.to_string());

    let mut rows = Vec::new();
    for config in configs(args.config) {
        for &opt in &opts {
            match bench(opt, &config, &args) {
                Ok(row) => {
                    if !args.json {
                        eprintln!("done: {} {}", row.optimizer, row.config);
                    }
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    }

    if args.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let contenders: serde_json::Map<String, serde_json::Value> = r
                    .stats
                    .iter()
                    .map(|(name, s)| {
                        let v = serde_json::json!({
                            "median_s": s.median_s, "min_s": s.min_s, "max_s": s.max_s, "samples_s": s.samples_s,
                            "gbps": r.bytes as f64 / s.median_s / 1e9,
                        });
                        (name.to_string(), v)
                    })
                    .collect();
                serde_json::json!({
                    "optimizer": r.optimizer, "config": r.config, "numel": r.numel, "tensors": r.tensors,
                    "bytes_per_step": r.bytes, "contenders": contenders,
                    "gdc_vs_hand": speed_ratio(r, "hand-fused"), "gdc_vs_candle": speed_ratio(r, "candle"),
                })
            })
            .collect();
        let json = serde_json::json!({
            "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats, "results": rows,
        });
        println!("{json}");
        return ExitCode::SUCCESS;
    }

    println!(
        "CPU step, {} thread{}, median (min–max) of {} steps after {} warm-up, ms; GB/s = bytes the plan moves / median",
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        args.repeats,
        args.warmup
    );
    println!();
    println!("| optimizer | config | params (tensors) | MB/step | gdc ms | hand-fused ms | candle ms | gdc GB/s | hand GB/s | gdc speed / hand | gdc speed / candle | gdc skip_step ms | skip_step cost |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let gbps =
            |name: &str| get(r, name).map_or("–".into(), |s| format!("{:.1}", r.bytes as f64 / s.median_s / 1e9));
        let ratio = |name: &str| speed_ratio(r, name).map_or("–".into(), |x| format!("{x:.2}×"));
        println!(
            "| {} | {} | {} ({}) | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.optimizer,
            r.config,
            r.numel,
            r.tensors,
            r.bytes as f64 / 1e6,
            cell(get(r, "gdc")),
            cell(get(r, "hand-fused")),
            cell(get(r, "candle")),
            gbps("gdc"),
            gbps("hand-fused"),
            ratio("hand-fused"),
            ratio("candle"),
            cell(get(r, "gdc skip_step")),
            get(r, "gdc skip_step")
                .zip(get(r, "gdc"))
                .map_or("–".into(), |(c, g)| format!("+{:.0}%", (c.median_s / g.median_s - 1.0) * 100.0)),
        );
    }
    ExitCode::SUCCESS
}
