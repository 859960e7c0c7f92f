//! `gdc bench`: times an optimizer's step on synthetic parameters and reports the median and
//! spread of the step time, nanoseconds per parameter and effective bandwidth (the bytes the
//! plan moves per step over the median time).

use gdc_runtime::bench::{bytes_per_step, fill_uniform, measure, mixed_shapes, state_bytes};
use gdc_runtime::{Optimizer, Options, ParamSpec};
use std::process::ExitCode;

mod cuda;

/// Arguments of `gdc bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The optimizer: a .gd source or a .gdo artifact (`--backend cuda` on a gdc without the
    /// `mlir` feature needs one built with `--target cuda`).
    file: String,
    /// Which backend runs the steps.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BenchBackend,
    /// Parameters in all (float32 elements); required unless --shape is given.
    #[arg(long, required_unless_present_any = ["shape", "sizes"], default_value_t = 0)]
    numel: usize,
    /// How many tensors hold them: one is a single vector; more are a deterministic mix of
    /// matrices and vectors of different sizes, like a transformer's layers. With --shape:
    /// how many tensors of that shape.
    #[arg(long, default_value_t = 1)]
    tensors: usize,
    /// Every tensor has this shape (`1024x4096`, `300`), e.g. for optimizers that update
    /// only matrices; replaces --numel.
    #[arg(long, value_parser = parse_shape, conflicts_with = "numel")]
    shape: Option<ShapeArg>,
    /// A file of whitespace-separated tensor sizes (`4096`, a vector) or shapes
    /// (`768x3072`), e.g. the mixed sizes a baseline script drew, so both sides time the
    /// same tensors; replaces --numel.
    #[arg(long, conflicts_with_all = ["numel", "shape"])]
    sizes: Option<String>,
    /// Worker threads for the CPU backend (default: one per available core).
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// A hyperparameter for the run, NAME=VALUE (repeatable): `--set tinv=10`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    sets: Vec<(String, f64)>,
    /// For a program with per-step inputs: the size of an input's own dimensions (`batch` of
    /// K-FAC's `a` and `s`). Required inputs are handed over (random, fixed) on the steps that
    /// read them.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Hand the optional inputs (Sophia-G's `h`) over every N-th step (0: never), so the
    /// timed steps include their share of refreshes.
    #[arg(long, default_value_t = 0)]
    optional_every: usize,
}

fn parse_set(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let value: f64 = value.trim().parse().map_err(|_| format!("`{value}` is not a number"))?;
    Ok((name.trim().to_string(), value))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchBackend {
    /// Cranelift machine code over a pool of worker threads.
    Cpu,
    /// The float64 reference interpreter.
    Interp,
    /// PTX kernels on an NVIDIA GPU over device buffers; timed with CUDA events, next to a
    /// device-to-device copy of the parameters (the bandwidth limit).
    Cuda,
}

/// A tensor shape given on the command line (`1024x4096`).
#[derive(Clone, Debug)]
pub struct ShapeArg(Vec<usize>);

fn parse_shape(text: &str) -> Result<ShapeArg, String> {
    let dims: Result<Vec<usize>, _> = text.split('x').map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|x| *x > 0) => Ok(ShapeArg(d)),
        _ => Err(format!("`{text}` is not a shape like 1024x4096 (positive sizes separated by x)")),
    }
}

fn bad(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Runs `gdc bench`: exit 0 on success, 1 when the optimizer does not compile, 2 on bad
/// arguments or parameters the optimizer cannot bind.
pub fn run(args: &BenchArgs) -> Result<ExitCode, ExitCode> {
    let sizes = match &args.sizes {
        Some(path) => Some(read_sizes(path).map_err(bad)?),
        None => None,
    };
    if args.numel == 0 && args.shape.is_none() && sizes.is_none() {
        return Err(bad("--numel must be at least 1".into()));
    }
    if args.tensors == 0 {
        return Err(bad("--tensors must be at least 1".into()));
    }
    if args.shape.is_none() && sizes.is_none() && args.tensors > args.numel {
        return Err(bad(format!(
            "--tensors {} is more than --numel {}: every tensor needs at least one element",
            args.tensors, args.numel
        )));
    }
    if args.repeats == 0 {
        return Err(bad("--repeats must be at least 1".into()));
    }
    if args.threads == Some(0) {
        return Err(bad("--threads must be at least 1".into()));
    }
    let program = crate::load_program(&args.file, matches!(args.backend, BenchBackend::Cuda), 1)?;

    let shapes = match (&args.shape, sizes) {
        (Some(shape), _) => vec![shape.0.clone(); args.tensors],
        (None, Some(shapes)) => shapes,
        (None, None) => mixed_shapes(args.numel, args.tensors),
    };
    let numel: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let tensors = shapes.len();
    let specs: Vec<ParamSpec> = shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("t{i}"), s)).collect();
    let backend = match args.backend {
        BenchBackend::Cpu => gdc_runtime::Backend::Cpu,
        BenchBackend::Interp => gdc_runtime::Backend::Interp,
        BenchBackend::Cuda => gdc_runtime::Backend::Cuda,
    };
    let mut opt = Optimizer::with_options(&program, &specs, Options { backend, threads: args.threads })
        .map_err(|e| bad(format!("{}: {e}", args.file)))?;
    for (name, value) in &args.sets {
        opt.set_hyper(name, *value).map_err(|e| bad(format!("{}: {e}", args.file)))?;
    }
    let bytes = bytes_per_step(program.plan(), &specs).map_err(|e| bad(format!("{}: {e}", args.file)))?;
    let (state_stored, state_f32) =
        state_bytes(program.plan(), &specs).map_err(|e| bad(format!("{}: {e}", args.file)))?;
    if let BenchBackend::Cuda = args.backend {
        let report = cuda::time(&mut opt, &specs, args.warmup, args.repeats).map_err(bad)?;
        return Ok(cuda::print(args, &program, &report, numel, tensors, bytes));
    }

    let mut seed = 0x5eed_0001_u64;
    let mut params: Vec<Vec<f32>> = specs.iter().map(|s| fill_uniform(&mut seed, s.numel(), 1.0)).collect();
    let grads: Vec<Vec<f32>> = specs.iter().map(|s| fill_uniform(&mut seed, s.numel(), 0.1)).collect();
    let grad_views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    let inputs = StepInputs::new(program.plan(), &specs, args.batch, &mut seed);
    let mut failure = None;
    let mut taken = 0usize;
    let stats = measure(args.warmup, args.repeats, || {
        if failure.is_none() {
            let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
            let optional = args.optional_every > 0 && taken.is_multiple_of(args.optional_every);
            taken += 1;
            let result = match inputs.for_next_step(&mut opt, optional) {
                Ok(given) => opt.step_with_inputs(&mut views, &grad_views, &given),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failure = Some(e);
            }
        }
    });
    if let Some(e) = failure {
        return Err(bad(format!("{}: the step failed: {e}", args.file)));
    }

    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let backend_name = match args.backend {
        BenchBackend::Cpu => "cpu",
        BenchBackend::Interp => "interp",
        BenchBackend::Cuda => "cuda",
    };
    let ns_per_param = stats.median_s * 1e9 / numel as f64;
    // Which code ran the CPU kernels: the LLVM tier's level and how many kernel items.
    let (tier, native_items) = match (args.backend, program.native()) {
        (BenchBackend::Cpu, Some((level, n))) => (level.name(), n),
        (BenchBackend::Cpu, None) => ("cranelift", 0),
        _ => ("", 0),
    };
    let gbps = bytes as f64 / stats.median_s / 1e9;
    if args.json {
        let json = serde_json::json!({
            "optimizer": program.name(),
            "file": args.file,
            "backend": backend_name,
            "cpu_tier": tier,
            "native_kernel_items": native_items,
            "numel": numel,
            "tensors": tensors,
            "threads": threads,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "median_s": stats.median_s,
            "min_s": stats.min_s,
            "max_s": stats.max_s,
            "samples_s": stats.samples_s,
            "ns_per_param": ns_per_param,
            "bytes_per_step": bytes,
            "gbps": gbps,
            "state_bytes": state_stored,
            "state_bytes_f32": state_f32,
        });
        println!("{json}");
    } else {
        println!(
            "bench {} on {backend_name}: {} parameters in {} tensor{}, {threads} thread{}, {} timed step{} after {} warm-up",
            program.name(),
            numel,
            tensors,
            plural(tensors),
            plural(threads),
            args.repeats,
            plural(args.repeats),
            args.warmup
        );
        println!(
            "step time: median {} (min {} – max {})",
            seconds(stats.median_s),
            seconds(stats.min_s),
            seconds(stats.max_s)
        );
        if !tier.is_empty() {
            match native_items {
                0 => println!("kernels: Cranelift (SSE, 128-bit)"),
                n => println!("kernels: {n} kernel item(s) on the LLVM tier ({tier}), the rest on Cranelift"),
            }
        }
        println!("per parameter: {ns_per_param:.3} ns");
        println!(
            "bytes per step: {bytes} ({:.1} bytes per parameter), effective {gbps:.2} GB/s",
            bytes as f64 / numel as f64
        );
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        if state_stored < state_f32 {
            println!(
                "optimizer state: {:.1} MiB ({:.1} MiB as float32: bf16 state saves {:.1} MiB, {:.0}%)",
                mib(state_stored),
                mib(state_f32),
                mib(state_f32 - state_stored),
                100.0 * (state_f32 - state_stored) as f64 / state_f32 as f64
            );
        } else {
            println!("optimizer state: {:.1} MiB", mib(state_stored));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fixed random data for every declared input of every parameter, handed over on the steps
/// that read it (required inputs, by `inputs_next_step`) or when asked (optional ones).
struct StepInputs {
    all: Vec<GivenInput>,
}

/// (parameter name, input name, shape, data, optional)
type GivenInput = (String, String, Vec<usize>, Vec<f32>, bool);

impl StepInputs {
    fn new(plan: &gdc_compiler::plan::Plan, specs: &[ParamSpec], batch: usize, seed: &mut u64) -> StepInputs {
        let mut all = Vec::new();
        for spec in specs {
            for x in &plan.module.inputs {
                let shape = gdc_compiler::inputs::shape_for(x, &spec.shape, batch);
                let data = fill_uniform(seed, shape.iter().product(), 0.1);
                all.push((spec.name.clone(), x.name.clone(), shape, data, x.optional));
            }
        }
        StepInputs { all }
    }

    fn for_next_step(
        &self,
        opt: &mut Optimizer,
        optional: bool,
    ) -> Result<gdc_runtime::Inputs<'_>, gdc_runtime::RuntimeError> {
        let needed = if self.all.iter().any(|x| !x.4) { opt.inputs_next_step()? } else { Vec::new() };
        let mut given = gdc_runtime::Inputs::new();
        for (p, n, shape, data, opt_in) in &self.all {
            if (*opt_in && optional) || needed.iter().any(|(q, m)| q == p && m == n) {
                given.add(p, n, shape, data);
            }
        }
        Ok(given)
    }
}

/// Tensor shapes from a file of whitespace-separated sizes (`4096`) or shapes (`768x3072`).
fn read_sizes(path: &str) -> Result<Vec<Vec<usize>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let shapes: Result<Vec<Vec<usize>>, _> = text.split_whitespace().map(|t| parse_shape(t).map(|s| s.0)).collect();
    match shapes {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => Err(format!("{path}: expected whitespace-separated positive tensor sizes or shapes like 768x3072")),
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub(crate) fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.3} µs", s * 1e6)
    }
}
