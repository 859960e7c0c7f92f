//! Compiles a `.gd` optimizer and trains a small linear model with it: y = W x + b fitted to
//! a noisy teacher on anisotropic inputs, gradients computed by hand, every step applied by
//! the compiled plan on the reference interpreter. Prints the plan's shape and the loss.
//!
//!   cargo run -p gdc-examples --bin train-linear -- examples/optimizers/adamw.gd [steps] [lr]

use gdc_compiler::interp::Interpreter;
use gdc_compiler::plan::Item;
use std::process::ExitCode;

const IN: usize = 8;
const OUT: usize = 4;
const BATCH: usize = 64;

/// Deterministic standard-normal-ish values (sum of uniforms).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// Mean squared error of y = W x + b over a batch, and its gradients.
fn loss_and_grads(w: &[f64], b: &[f64], xs: &[Vec<f64>], ys: &[Vec<f64>]) -> (f64, Vec<f64>, Vec<f64>) {
    let (mut loss, mut gw, mut gb) = (0.0, vec![0.0; OUT * IN], vec![0.0; OUT]);
    let n = xs.len() as f64;
    for (x, y) in xs.iter().zip(ys) {
        for o in 0..OUT {
            let pred: f64 = b[o] + (0..IN).map(|i| w[o * IN + i] * x[i]).sum::<f64>();
            let r = pred - y[o];
            loss += r * r / n;
            gb[o] += 2.0 * r / n;
            for i in 0..IN {
                gw[o * IN + i] += 2.0 * r * x[i] / n;
            }
        }
    }
    (loss, gw, gb)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: train-linear FILE.gd [steps] [lr]");
        return ExitCode::from(2);
    };
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let lr: Option<f64> = args.get(3).and_then(|s| s.parse().ok());
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let compiled = match gdc_compiler::compile(&source) {
        Ok(c) => c,
        Err(gdc_compiler::CompileError::Source(d)) => {
            eprint!("{}", gdc_dsl::render(&d, path, &source));
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(101);
        }
    };
    for v in &compiled.plan.variants {
        let kernels = v.update.items.iter().filter(|i| matches!(i, Item::Kernel(_))).count();
        let calls = v.update.items.len() - kernels;
        println!(
            "compiled {} update{}: {} host scalar(s) per step, {} per parameter, {kernels} kernel(s), {calls} library call(s)",
            compiled.plan.module.name,
            gdc_compiler::ir::pattern_text(v.pattern),
            v.update.host.len(),
            v.update.param.len(),
        );
    }

    // A teacher on inputs whose scales span two orders of magnitude.
    let mut rng = Rng(0x5eed);
    let teacher: Vec<f64> = (0..OUT * IN).map(|_| rng.normal()).collect();
    let scale: Vec<f64> = (0..IN).map(|i| 10f64.powf(-1.0 + 2.0 * i as f64 / (IN - 1) as f64)).collect();
    let xs: Vec<Vec<f64>> = (0..BATCH).map(|_| (0..IN).map(|i| scale[i] * rng.normal()).collect()).collect();
    let ys: Vec<Vec<f64>> = xs
        .iter()
        .map(|x| {
            (0..OUT).map(|o| (0..IN).map(|i| teacher[o * IN + i] * x[i]).sum::<f64>() + 0.01 * rng.normal()).collect()
        })
        .collect();

    let params = [
        ("w".to_string(), vec![OUT, IN], (0..OUT * IN).map(|_| 0.1 * rng.normal()).collect::<Vec<f64>>()),
        ("b".to_string(), vec![OUT], vec![0.0; OUT]),
    ];
    let mut values: Vec<Vec<f64>> = params.iter().map(|p| p.2.clone()).collect();
    let shapes: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.0.clone(), p.1.clone())).collect();
    let mut opt = match Interpreter::new(compiled.plan, &shapes) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(lr) = lr {
        if let Err(e) = opt.set_hyper("lr", lr) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let (first, ..) = loss_and_grads(&values[0], &values[1], &xs, &ys);
    println!("step {:>5}  loss {first:.6}", 0);
    let mut last = first;
    for step in 1..=steps {
        let (loss, gw, gb) = loss_and_grads(&values[0], &values[1], &xs, &ys);
        if let Err(e) = opt.step(&mut values, &[gw, gb]) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        last = loss;
        if step % (steps / 10).max(1) == 0 {
            println!("step {step:>5}  loss {loss:.6}");
        }
    }
    println!("loss {first:.4} -> {last:.6} after {steps} steps");
    if last.is_finite() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the loss diverged");
        ExitCode::from(1)
    }
}
