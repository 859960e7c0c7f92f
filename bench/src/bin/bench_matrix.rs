//! `bench-matrix`: the curvature-aware optimizers' matrix arithmetic on the CPU, in one
//! process: faer's float32 GEMM on the products Newton–Schulz runs (the machine's limit for
//! this crate), Muon's whole step on 1024x1024 and 4096x1024, and a transformer-like set
//! (12 layers of 768x3072, 3072x768 and four 768x768) for Muon, Shampoo (roots every 10
//! steps) and SOAP (eigenbasis refresh every 10 steps), each step's FLOPs counted by the
//! runtime as its library calls execute; Muon's Newton–Schulz with bfloat16 operands (muon.gd's
//! default) and in float32. With `--torch PYTHON`, torch.optim.Muon on the same shapes and
//! torch's bfloat16 GEMM (the bf16 limit) in the same run. Prints a Markdown table.

use clap::Parser;
use faer::{Accum, Mat, MatRef, Par};
use gdc_runtime::bench::{fill_uniform, measure, Stats};
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "bench-matrix", about = "Muon, Shampoo and SOAP steps against the GEMM peak and torch.optim.Muon")]
struct Args {
    /// Worker threads for gdc, faer's GEMM and torch.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs per figure (medians are reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Layers of the transformer-like set (0 skips it).
    #[arg(long, default_value_t = 12)]
    layers: usize,
    /// Which optimizers run on the transformer-like set.
    #[arg(long, default_value = "muon,shampoo,soap")]
    set: String,
    /// Run every decomposition of the examples in this precision: `f32` adds
    /// `precision = f32` to each `inv_root`, `eigvecs`, `eigvals` and `qr` call.
    #[arg(long, default_value = "f64")]
    decompositions: String,
    /// How the examples' inverse roots run: `newton` adds `method = newton` to each
    /// `inv_root` call (the coupled Newton iteration) instead of `eigh`.
    #[arg(long, default_value = "eigh")]
    roots: String,
    /// A Python with PyTorch: time torch.optim.Muon on the same shapes in this run.
    #[arg(long)]
    torch: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn source(name: &str, decompositions: &str, roots: &str) -> Result<String, String> {
    let text = gdc_bench::example_source(name)?;
    let text = match decompositions {
        "f64" => text,
        "f32" => with_argument(&text, &["inv_root(", "eigvecs(", "eigvals(", "qr("], ", precision = f32"),
        other => return Err(format!("--decompositions {other}: expected f32 or f64")),
    };
    match roots {
        "eigh" => Ok(text),
        "newton" => Ok(with_argument(&text, &["inv_root("], ", method = newton")),
        other => Err(format!("--roots {other}: expected eigh or newton")),
    }
}

/// The source with `argument` added to every call of `calls` (each `name(`).
fn with_argument(text: &str, calls: &[&str], argument: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut closes = Vec::new();
    while i < bytes.len() {
        let rest = &text[i..];
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let call = calls.iter().find(|c| word_start && rest.starts_with(**c));
        if let Some(c) = call {
            // Find the matching parenthesis and remember where to insert.
            let mut depth = 0;
            for (j, b) in rest.bytes().enumerate() {
                match b {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            closes.push(i + j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.push_str(c);
            i += c.len();
            continue;
        }
        if closes.contains(&i) {
            out.push_str(argument);
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// faer's float32 GEMM `[m, k] x [k, n]`, GFLOP/s (median of `repeats`).
fn gemm_rate(m: usize, k: usize, n: usize, threads: usize, repeats: usize) -> (f64, Stats) {
    let mut seed = 11;
    let (a, b) = (fill_uniform(&mut seed, m * k, 1.0), fill_uniform(&mut seed, k * n, 1.0));
    let (a, b) = (MatRef::from_row_major_slice(&a, m, k), MatRef::from_row_major_slice(&b, k, n));
    let mut c = Mat::<f32>::zeros(m, n);
    let par = NonZeroUsize::new(threads).filter(|t| t.get() > 1).map_or(Par::Seq, Par::Rayon);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let stats = pool
        .install(|| measure(1, repeats, || faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, a, b, 1.0, par)));
    (2.0 * (m * k * n) as f64 / stats.median_s / 1e9, stats)
}

/// One optimizer on a set of parameters: the median time of `window` consecutive steps
/// (after `skip` untimed ones) divided by `window`, and the FLOPs per step over the window.
struct Timing {
    per_step: Stats,
    flops_per_step: f64,
}

#[allow(clippy::too_many_arguments)] // one call site per table; a struct would only rename them
fn time_steps(
    name: &str,
    shapes: &[Vec<usize>],
    hypers: &[(&str, f64)],
    threads: usize,
    skip: usize,
    window: usize,
    repeats: usize,
    decompositions: &str,
    roots: &str,
) -> Result<Timing, String> {
    let program = Program::compile(&source(name, decompositions, roots)?).map_err(|e| e.to_string())?;
    let specs: Vec<ParamSpec> = shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("w{i}"), s)).collect();
    let options = Options { backend: Backend::Cpu, threads: Some(threads) };
    let mut opt = Optimizer::with_options(&program, &specs, options).map_err(|e| e.to_string())?;
    for (h, v) in hypers {
        opt.set_hyper(h, *v).map_err(|e| e.to_string())?;
    }
    let mut seed = 3;
    let mut params: Vec<Vec<f32>> = shapes.iter().map(|s| fill_uniform(&mut seed, s.iter().product(), 0.02)).collect();
    let grads: Vec<Vec<f32>> = shapes.iter().map(|s| fill_uniform(&mut seed, s.iter().product(), 0.01)).collect();
    let grad_refs: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let mut step = |opt: &mut Optimizer| -> Result<(), String> {
        let mut refs: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
        opt.step(&mut refs, &grad_refs).map_err(|e| e.to_string())
    };
    for _ in 0..skip {
        step(&mut opt)?;
    }
    let mut samples = Vec::new();
    let mut flops = 0.0;
    for _ in 0..repeats {
        let before = opt.matrix_flops().unwrap_or(0);
        let t = Instant::now();
        for _ in 0..window {
            step(&mut opt)?;
        }
        samples.push(t.elapsed().as_secs_f64() / window as f64);
        flops = (opt.matrix_flops().unwrap_or(0) - before) as f64 / window as f64;
    }
    Ok(Timing { per_step: Stats::from_samples(samples), flops_per_step: flops })
}

fn spread(s: &Stats) -> String {
    format!("{:.1} ms ({:.1}–{:.1})", s.median_s * 1e3, s.min_s * 1e3, s.max_s * 1e3)
}

/// torch.optim.Muon's step medians by case, from bench/scripts/torch_muon.py.
fn torch_muon(python: &PathBuf, threads: usize, layers: usize, repeats: usize) -> Result<Vec<(String, Stats)>, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_muon.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["--threads", &threads.to_string(), "--layers", &layers.to_string(), "--repeats", &repeats.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let mut cases = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("torch output `{line}`: {e}"))?;
        let ms = |k: &str| v[k].as_f64().unwrap_or(f64::NAN) / 1e3;
        let stats = Stats { samples_s: vec![], median_s: ms("median_ms"), min_s: ms("min_ms"), max_s: ms("max_ms") };
        cases.push((v["case"].as_str().unwrap_or("?").to_string(), stats));
    }
    Ok(cases)
}

fn run(args: &Args) -> Result<(), String> {
    let (t, r) = (args.threads, args.repeats);
    println!(
        "bench-matrix: {t} thread(s), medians of {r} (min–max), {} decompositions, {} roots\n",
        args.decompositions, args.roots
    );

    // The limit: faer's GEMM on the two product shapes of each Newton–Schulz iteration.
    let peaks = [(1024, 1024, 1024), (1024, 4096, 1024), (1024, 1024, 4096)];
    println!("| faer GEMM [m, k] x [k, n] | time | GFLOP/s |\n|---|---|---|");
    let mut peak: f64 = 0.0;
    for (m, k, n) in peaks {
        let (rate, stats) = gemm_rate(m, k, n, t, r);
        peak = peak.max(rate);
        println!("| {m}x{k} x {k}x{n} | {} | {rate:.1} |", spread(&stats));
    }
    println!("\nGEMM peak (best of the above): {peak:.1} GFLOP/s\n");

    let torch = match &args.torch {
        Some(py) => torch_muon(py, t, if args.set.contains("muon") { args.layers } else { 0 }, r)?,
        None => Vec::new(),
    };
    let torch_case = |case: &str| torch.iter().find(|(c, _)| c == case).map(|(_, s)| s.clone());

    // The bf16 limit: torch's bfloat16 GEMM (oneDNN) on 1024^3, when torch ran.
    let bf16_peak = torch_case("bf16-gemm-1024").map(|s| 2.0 * 1024f64.powi(3) / s.median_s / 1e9);
    match bf16_peak {
        Some(rate) => println!("bf16 GEMM peak (torch.mm in bfloat16, 1024^3, same run): {rate:.1} GFLOP/s\n"),
        None => println!("bf16 GEMM peak: not measured (needs --torch)\n"),
    }

    // Muon on one matrix: FLOPs as executed (symmetric products at half), with muon.gd's
    // default bfloat16 Newton-Schulz operands and with float32 ones (`ns_precision` 24).
    // Beside them, torch.optim.Muon (its Newton-Schulz in bfloat16) and the same
    // Newton-Schulz written in float32 torch (three full products per iteration).
    println!("| Muon step | gdc, bf16 NS | GFLOP/s | of bf16 peak | torch.optim.Muon (bf16 NS) | gdc / torch | gdc, f32 NS | of f32 peak | torch NS in f32 | gdc f32 / torch f32 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (rows, cols) in [(1024usize, 1024usize), (4096, 1024)] {
        let bf16 = time_steps("muon", &[vec![rows, cols]], &[], t, 1, 1, r, "f64", "eigh")?;
        let f32 = time_steps("muon", &[vec![rows, cols]], &[("ns_precision", 24.0)], t, 1, 1, r, "f64", "eigh")?;
        let rate = |x: &Timing| x.flops_per_step / x.per_step.median_s / 1e9;
        let ratio = |mine: &Timing, case: Option<Stats>| match case {
            Some(s) => (spread(&s), format!("{:.2}", mine.per_step.median_s / s.median_s)),
            None => ("not run".to_string(), "—".to_string()),
        };
        let (torch_cell, torch_ratio) = ratio(&bf16, torch_case(&format!("{rows}x{cols}")));
        let (f32_cell, f32_ratio) = ratio(&f32, torch_case(&format!("{rows}x{cols}-f32")));
        let of_bf16 = bf16_peak.map_or("—".to_string(), |p| format!("{:.0}%", 100.0 * rate(&bf16) / p));
        println!(
            "| {rows}x{cols} | {} | {:.1} | {of_bf16} | {torch_cell} | {torch_ratio} | {} | {:.0}% | {f32_cell} | {f32_ratio} |",
            spread(&bf16.per_step),
            rate(&bf16),
            spread(&f32.per_step),
            100.0 * rate(&f32) / peak,
        );
    }

    if args.layers > 0 {
        let mut shapes = Vec::new();
        for _ in 0..args.layers {
            shapes.extend([
                vec![768, 3072],
                vec![3072, 768],
                vec![768, 768],
                vec![768, 768],
                vec![768, 768],
                vec![768, 768],
            ]);
        }
        println!(
            "\n| transformer-like set ({} layers, {} matrices) | amortised step | GFLOP per step | GFLOP/s | of peak | torch.optim.Muon |",
            args.layers,
            shapes.len()
        );
        println!("|---|---|---|---|---|---|");
        for name in args.set.split(',') {
            // Shampoo and SOAP: step 1 builds the preconditioner; a window of 10 steps then
            // holds exactly one refresh (steps 11, 21, ...), so its mean is the amortised step.
            let (hypers, skip, window, repeats): (&[(&str, f64)], usize, usize, usize) = match name {
                "muon" => (&[], 1, 1, r),
                "shampoo" => (&[("precondition_frequency", 10.0)], 1, 10, 1),
                "soap" => (&[("precondition_frequency", 10.0)], 1, 10, 1),
                other => return Err(format!("unknown optimizer `{other}` in --set (muon, shampoo, soap)")),
            };
            let timing =
                time_steps(name, &shapes, hypers, t, skip, window, repeats, &args.decompositions, &args.roots)?;
            let rate = timing.flops_per_step / timing.per_step.median_s / 1e9;
            let torch_cell = if name == "muon" { torch_case("transformer") } else { None };
            // Muon's products are bfloat16 (muon.gd's default): its limit is the bf16 peak.
            let of_peak = match (name, bf16_peak) {
                ("muon", Some(p)) => format!("{:.0}% of bf16", 100.0 * rate / p),
                ("muon", None) => "—".to_string(),
                _ => format!("{:.0}%", 100.0 * rate / peak),
            };
            println!(
                "| {name} | {} | {:.1} | {rate:.1} | {of_peak} | {} |",
                spread(&timing.per_step),
                timing.flops_per_step / 1e9,
                torch_cell.as_ref().map_or("—".into(), spread),
            );
        }
    }
    Ok(())
}
