//! Trains a small MLP with a compiled `.gd` optimizer through `gdc_runtime::Optimizer`: a
//! 3-class classifier (2 → 32 → 32 → 3, tanh, softmax cross-entropy) on three interleaved
//! spiral arms, full batch, gradients by hand-written backprop. Prints the loss and accuracy
//! every tenth of the run and the final train and test figures. Deterministic.
//!
//!   cargo run --release -p gdc-examples --bin train-mlp -- examples/optimizers/adamw.gd [steps] [lr]
//!
//! `steps` defaults to 1000; `lr`, when given, overrides the optimizer's `lr` hyperparameter.
//! Exit codes: 2 for bad arguments or an unreadable file, 1 when the optimizer does not
//! compile or bind, a step fails or the loss diverges.

use gdc_runtime::{Optimizer, ParamSpec, Role, RuntimeError};
use std::process::ExitCode;

const IN: usize = 2;
const HIDDEN: usize = 32;
const CLASSES: usize = 3;
/// Points per class in each of the train and test sets.
const PER_CLASS: usize = 100;
const DEFAULT_STEPS: usize = 1000;

/// xorshift64: deterministic uniforms and roughly normal values.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Irwin–Hall: the sum of 12 uniforms, centred; mean 0, variance 1.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// Labelled points.
struct Data {
    xs: Vec<[f64; IN]>,
    ys: Vec<usize>,
}

/// `PER_CLASS` points on each of three spiral arms, with noise.
fn spirals(rng: &mut Rng) -> Data {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for class in 0..CLASSES {
        for _ in 0..PER_CLASS {
            let r = 0.1 + 0.9 * rng.uniform();
            let angle = class as f64 * std::f64::consts::TAU / CLASSES as f64 + 3.0 * r + 0.15 * rng.normal();
            xs.push([r * angle.cos(), r * angle.sin()]);
            ys.push(class);
        }
    }
    Data { xs, ys }
}

/// The parameters, in this order: `(name, shape, role)`. Matrices are `[out, in]`.
fn layout() -> [(&'static str, Vec<usize>, Role); 6] {
    [
        ("l1.w", vec![HIDDEN, IN], Role::Input),
        ("l1.b", vec![HIDDEN], Role::Bias),
        ("l2.w", vec![HIDDEN, HIDDEN], Role::Hidden),
        ("l2.b", vec![HIDDEN], Role::Bias),
        ("out.w", vec![CLASSES, HIDDEN], Role::Output),
        ("out.b", vec![CLASSES], Role::Bias),
    ]
}

fn specs() -> Vec<ParamSpec> {
    layout().into_iter().map(|(name, shape, role)| ParamSpec::new(name, &shape).with_role(role)).collect()
}

/// Weights normal with variance 1 / fan-in, biases zero.
fn init(rng: &mut Rng) -> Vec<Vec<f32>> {
    layout()
        .iter()
        .map(|(_, shape, _)| match shape[..] {
            [out, fan_in] => (0..out * fan_in).map(|_| (rng.normal() / (fan_in as f64).sqrt()) as f32).collect(),
            _ => vec![0.0; shape.iter().product()],
        })
        .collect()
}

/// `y = W x + b` for `W` of shape `[out, in]`.
fn affine(w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
    b.iter()
        .enumerate()
        .map(|(o, bo)| bo + w[o * x.len()..(o + 1) * x.len()].iter().zip(x).map(|(a, c)| a * c).sum::<f64>())
        .collect()
}

/// Accumulates the gradients of `y = W x + b` given `dy`, and returns `dx`.
fn affine_back(w: &[f64], x: &[f64], dy: &[f64], gw: &mut [f64], gb: &mut [f64]) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for (o, d) in dy.iter().enumerate() {
        gb[o] += d;
        for (i, xi) in x.iter().enumerate() {
            gw[o * x.len() + i] += d * xi;
            dx[i] += d * w[o * x.len() + i];
        }
    }
    dx
}

/// Mean cross-entropy, accuracy and (with `grads`) the gradient of the loss for each parameter.
struct Eval {
    loss: f64,
    accuracy: f64,
    grads: Vec<Vec<f64>>,
}

/// Forward (and backward) pass over the whole set, in float64.
fn evaluate(p: &[Vec<f64>], data: &Data, grads: bool) -> Eval {
    let n = data.xs.len() as f64;
    let mut g: Vec<Vec<f64>> = p.iter().map(|v| vec![0.0; if grads { v.len() } else { 0 }]).collect();
    let (mut loss, mut correct) = (0.0, 0usize);
    for (x, &y) in data.xs.iter().zip(&data.ys) {
        let h1: Vec<f64> = affine(&p[0], &p[1], x).into_iter().map(f64::tanh).collect();
        let h2: Vec<f64> = affine(&p[2], &p[3], &h1).into_iter().map(f64::tanh).collect();
        let logits = affine(&p[4], &p[5], &h2);
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        loss += (sum.ln() + max - logits[y]) / n;
        let predicted = (0..CLASSES).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0);
        correct += usize::from(predicted == y);
        if !grads {
            continue;
        }
        // d loss / d logits = softmax - onehot, over n.
        let dlogits: Vec<f64> =
            exps.iter().enumerate().map(|(c, e)| (e / sum - f64::from(u8::from(c == y))) / n).collect();
        let [g1w, g1b, g2w, g2b, g3w, g3b] = &mut g[..] else { unreachable!("six parameters") };
        let dh2 = affine_back(&p[4], &h2, &dlogits, g3w, g3b);
        let dz2: Vec<f64> = dh2.iter().zip(&h2).map(|(d, h)| d * (1.0 - h * h)).collect();
        let dh1 = affine_back(&p[2], &h1, &dz2, g2w, g2b);
        let dz1: Vec<f64> = dh1.iter().zip(&h1).map(|(d, h)| d * (1.0 - h * h)).collect();
        affine_back(&p[0], x, &dz1, g1w, g1b);
    }
    Eval { loss, accuracy: correct as f64 / n, grads: g }
}

fn widen(params: &[Vec<f32>]) -> Vec<Vec<f64>> {
    params.iter().map(|v| v.iter().map(|x| f64::from(*x)).collect()).collect()
}

/// Runs `steps` optimizer steps on the full training set; `log` sees the step number and the
/// evaluation the step's gradients came from. Returns the final evaluation on `data`.
fn train(
    opt: &mut Optimizer,
    params: &mut [Vec<f32>],
    data: &Data,
    steps: usize,
    mut log: impl FnMut(usize, &Eval),
) -> Result<Eval, RuntimeError> {
    for step in 0..steps {
        let eval = evaluate(&widen(params), data, true);
        log(step, &eval);
        let grads: Vec<Vec<f32>> = eval.grads.iter().map(|g| g.iter().map(|x| *x as f32).collect()).collect();
        let grad_refs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        let mut param_refs: Vec<&mut [f32]> = params.iter_mut().map(Vec::as_mut_slice).collect();
        opt.step(&mut param_refs, &grad_refs)?;
    }
    Ok(evaluate(&widen(params), data, false))
}

fn parse_arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<Option<T>, String> {
    match args.get(i) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| format!("{what} must be a number, not `{s}`")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: train-mlp FILE.gd [steps] [lr]";
    let (Some(path), true) = (args.get(1), args.len() <= 4) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let (steps, lr) = match (parse_arg::<usize>(&args, 2, "steps"), parse_arg::<f64>(&args, 3, "lr")) {
        (Ok(s), Ok(l)) => (s.unwrap_or(DEFAULT_STEPS), l),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut opt = match Optimizer::from_source(&source, &specs()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {path}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(lr) = lr {
        if let Err(e) = opt.set_hyper("lr", lr) {
            eprintln!("error: lr {lr}: {e}");
            return ExitCode::from(2);
        }
    }
    let lr_text = opt.hyper("lr").map_or("none".to_string(), |v| v.to_string());
    println!(
        "{}: {steps} steps, lr {lr_text}, MLP {IN}-{HIDDEN}-{HIDDEN}-{CLASSES} on {} spiral points",
        opt.program().name(),
        CLASSES * PER_CLASS
    );

    let mut rng = Rng(0x5eed_1234_abcd);
    let train_set = spirals(&mut rng);
    let test_set = spirals(&mut rng);
    let mut params = init(&mut rng);
    let every = (steps / 10).max(1);
    let started = std::time::Instant::now();
    let result = train(&mut opt, &mut params, &train_set, steps, |step, e| {
        if step % every == 0 {
            println!("step {step:>6}  loss {:.5}  accuracy {:.3}", e.loss, e.accuracy);
        }
    });
    let fin = match result {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let test = evaluate(&widen(&params), &test_set, false);
    println!("step {steps:>6}  loss {:.5}  accuracy {:.3}", fin.loss, fin.accuracy);
    println!(
        "final: train loss {:.5} accuracy {:.3}, test loss {:.5} accuracy {:.3} ({:.2} s)",
        fin.loss,
        fin.accuracy,
        test.loss,
        test.accuracy,
        started.elapsed().as_secs_f64()
    );
    if fin.loss.is_finite() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the loss diverged");
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backprop_matches_finite_differences() {
        let mut rng = Rng(7);
        let mut data = spirals(&mut rng);
        data.xs.truncate(40);
        data.ys.truncate(40);
        data.xs.extend(spirals(&mut rng).xs.into_iter().rev().take(20));
        data.ys.extend([2; 20]);
        let params = widen(&init(&mut rng));
        let analytic = evaluate(&params, &data, true).grads;
        let h = 1e-5;
        let mut worst = 0.0f64;
        for (t, shape) in params.iter().enumerate() {
            for i in 0..shape.len() {
                let mut plus = params.clone();
                plus[t][i] += h;
                let mut minus = params.clone();
                minus[t][i] -= h;
                let numeric = (evaluate(&plus, &data, false).loss - evaluate(&minus, &data, false).loss) / (2.0 * h);
                let err = (numeric - analytic[t][i]).abs() / (numeric.abs() + analytic[t][i].abs()).max(1e-6);
                assert!(err < 1e-5, "{}[{i}]: analytic {} vs numeric {numeric}", layout()[t].0, analytic[t][i]);
                worst = worst.max(err);
            }
        }
        assert!(worst > 0.0, "some gradient was compared");
    }

    #[test]
    fn two_hundred_adamw_steps_cut_the_loss_twentyfold() {
        let source = include_str!("../optimizers/adamw.gd");
        let mut opt = Optimizer::from_source(source, &specs()).expect("adamw compiles");
        opt.set_hyper("lr", 1e-2).expect("lr");
        let mut rng = Rng(0x5eed_1234_abcd);
        let data = spirals(&mut rng);
        let mut params = init(&mut rng);
        let mut first = None;
        let fin = train(&mut opt, &mut params, &data, 200, |_, e| {
            first.get_or_insert(e.loss);
        })
        .expect("steps");
        let first = first.expect("logged");
        assert!((first - 3f64.ln()).abs() < 0.3, "starts near chance: {first}");
        // 1.138 -> 0.0030 on the interpreter in float64; 20x leaves room for float32 backends.
        assert!(fin.loss < first / 20.0, "loss {first} -> {}", fin.loss);
        assert!(fin.accuracy > 0.95, "accuracy {}", fin.accuracy);
        assert_eq!(opt.step_count(), 200);
    }
}
