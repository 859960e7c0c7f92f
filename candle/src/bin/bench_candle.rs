//! What stepping a candle model through gdc-candle costs: one AdamW step on the same
//! parameters four ways, timed in the same run.
//!
//! - `gdc plain`: `gdc_runtime::Optimizer::step` on `Vec<f32>`s, the floor for any adapter;
//! - `gdc-candle`: `GdcOptimizer::step` on candle `Var`s and a `GradStore`, zero-copy;
//! - `copy in/out`: what an adapter without in-place access does: read every variable and
//!   gradient out of candle, step, and `Var::set` the result back;
//! - `candle-nn AdamW`: the optimizer a candle user would use instead.
//!
//!   cargo run --release -p gdc-candle --bin bench-candle -- [--numel N] [--tensors T] [--repeats R]

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
use gdc_candle::{GdcOptimizer, NamedVar};
use gdc_runtime::bench::{fill_uniform, measure, mixed_shapes, Stats};
use gdc_runtime::{Optimizer, ParamSpec, Program};
use std::process::ExitCode;

const ADAMW: &str = include_str!("../../../examples/optimizers/adamw.gd");

struct Args {
    numel: usize,
    tensors: Vec<usize>,
    repeats: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { numel: 1 << 22, tensors: vec![1, 100], repeats: 30 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |s: String| s.parse::<usize>().map_err(|_| format!("{flag}: `{s}` is not a count"));
        match flag.as_str() {
            "--numel" => args.numel = number(value()?)?,
            "--tensors" => {
                let v = value()?;
                args.tensors = v.split(',').map(|s| number(s.to_string())).collect::<Result<_, _>>()?
            }
            "--repeats" => args.repeats = number(value()?)?.max(1),
            "-h" | "--help" => {
                return Err("usage: bench-candle [--numel N] [--tensors T[,T...]] [--repeats R]".into());
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "AdamW, {} floats ({:.1} MiB of parameters), {threads} threads, median (min–max) of {} steps",
        args.numel,
        args.numel as f64 * 4.0 / (1 << 20) as f64,
        args.repeats
    );
    println!(
        "{:>8} {:>22} {:>22} {:>22} {:>22}",
        "tensors", "gdc plain", "gdc-candle", "copy in/out", "candle-nn AdamW"
    );
    for &tensors in &args.tensors {
        match row(args.numel, tensors, args.repeats) {
            Ok(cells) => {
                let base = cells[0].median_s;
                let shown: Vec<String> =
                    cells.iter().map(|s| format!("{:.3} ms ({:.2}x)", s.median_s * 1e3, s.median_s / base)).collect();
                println!("{tensors:>8} {:>22} {:>22} {:>22} {:>22}", shown[0], shown[1], shown[2], shown[3]);
                let spread: Vec<String> =
                    cells.iter().map(|s| format!("{:.3}–{:.3}", s.min_s * 1e3, s.max_s * 1e3)).collect();
                println!("{:>8} {:>22} {:>22} {:>22} {:>22}", "", spread[0], spread[1], spread[2], spread[3]);
            }
            Err(e) => {
                eprintln!("bench-candle: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

/// The four timings for `tensors` tensors holding `numel` floats.
fn row(numel: usize, tensors: usize, repeats: usize) -> Result<[Stats; 4], String> {
    let e = |e: candle_core::Error| e.to_string();
    let shapes = mixed_shapes(numel, tensors);
    let mut seed = 0x5eed;
    let params: Vec<Vec<f32>> = shapes.iter().map(|s| fill_uniform(&mut seed, s.iter().product(), 1.0)).collect();
    let grads: Vec<Vec<f32>> = shapes.iter().map(|s| fill_uniform(&mut seed, s.iter().product(), 1e-2)).collect();
    let program = Program::compile(ADAMW).map_err(|e| e.to_string())?;
    let specs: Vec<ParamSpec> = shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("t{i}"), s)).collect();
    let vars = || -> Result<Vec<Var>, String> {
        shapes.iter().zip(&params).map(|(s, p)| Var::from_slice(p, s.as_slice(), &Device::Cpu).map_err(e)).collect()
    };
    let store = |vars: &[Var]| -> Result<GradStore, String> {
        let mut store = GradStore::default();
        for ((v, s), g) in vars.iter().zip(&shapes).zip(&grads) {
            store.insert(v.as_tensor(), Tensor::from_slice(g, s.as_slice(), &Device::Cpu).map_err(e)?);
        }
        Ok(store)
    };
    let (warmup, mut failure) = (3, None::<String>);
    let mut note = |r: Result<(), String>| {
        if let Err(err) = r {
            failure.get_or_insert(err);
        }
    };

    // gdc on plain slices.
    let mut plain = Optimizer::new(&program, &specs).map_err(|e| e.to_string())?;
    let mut p = params.clone();
    let g: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    let plain_s = measure(warmup, repeats, || {
        let mut ps: Vec<&mut [f32]> = p.iter_mut().map(Vec::as_mut_slice).collect();
        note(plain.step(&mut ps, &g).map_err(|e| e.to_string()));
    });

    // gdc-candle, in place.
    let vs = vars()?;
    let grads_store = store(&vs)?;
    let named = vs.iter().enumerate().map(|(i, v)| NamedVar::new(format!("t{i}"), v.clone())).collect();
    let mut adapter = GdcOptimizer::new(&program, named).map_err(|e| e.to_string())?;
    let adapter_s = measure(warmup, repeats, || note(adapter.step(&grads_store).map_err(|e| e.to_string())));

    // Copy out, step, copy back.
    let vs = vars()?;
    let grads_store = store(&vs)?;
    let mut copying = Optimizer::new(&program, &specs).map_err(|e| e.to_string())?;
    let copy_s = measure(warmup, repeats, || {
        let r = (|| -> Result<(), String> {
            let mut ps: Vec<Vec<f32>> = vs
                .iter()
                .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
                .collect::<Result<_, _>>()
                .map_err(e)?;
            let gs: Vec<Vec<f32>> = vs
                .iter()
                .map(|v| grads_store.get(v.as_tensor()).expect("stored above").flatten_all()?.to_vec1::<f32>())
                .collect::<Result<_, _>>()
                .map_err(e)?;
            let mut pm: Vec<&mut [f32]> = ps.iter_mut().map(Vec::as_mut_slice).collect();
            let gr: Vec<&[f32]> = gs.iter().map(Vec::as_slice).collect();
            copying.step(&mut pm, &gr).map_err(|e| e.to_string())?;
            for ((v, s), new) in vs.iter().zip(&shapes).zip(ps) {
                v.set(&Tensor::from_vec(new, s.as_slice(), &Device::Cpu).map_err(e)?).map_err(e)?;
            }
            Ok(())
        })();
        note(r);
    });

    // candle-nn's AdamW with the same hyperparameters.
    let vs = vars()?;
    let grads_store = store(&vs)?;
    let h = |name: &str| plain.hyper(name).ok_or(format!("adamw.gd has no `{name}`"));
    let config = ParamsAdamW {
        lr: h("lr")?,
        beta1: h("beta1")?,
        beta2: h("beta2")?,
        eps: h("eps")?,
        weight_decay: h("weight_decay")?,
    };
    let mut candle = AdamW::new(vs, config).map_err(e)?;
    let candle_s = measure(warmup, repeats, || note(candle.step(&grads_store).map_err(e)));

    match failure {
        Some(err) => Err(err),
        None => Ok([plain_s, adapter_s, copy_s, candle_s]),
    }
}
