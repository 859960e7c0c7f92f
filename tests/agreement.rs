//! The CPU backend agrees with the reference interpreter: every example optimizer, on
//! random shapes (one element, sizes that are not a multiple of the vector width, matrices
//! and higher ranks), random data and random hyperparameters (every flag on and off), for
//! several steps, within a tolerance derived from float32 rounding. Empty tensors are
//! refused with an error on both.

use gdc_runtime::{Backend, HyperTy, Optimizer, Options, ParamSpec, Program};
use gdc_tests::{source, OPTIMIZERS};

/// `gdc_tests::noise` as float32.
fn noise(seed: u64, n: usize) -> Vec<f32> {
    gdc_tests::noise(seed, n).into_iter().map(|x| x as f32).collect()
}

/// Random shapes for an optimizer: one element, sizes that are not a multiple of the vector
/// width, matrices, a rank-3 tensor.
///
/// Shampoo and SOAP keep a square matrix per dimension, which the interpreter decomposes
/// slowly: their dimensions stay at 40 or below. SOAP's matrices are square: a non-square
/// gradient gives statistics of deficient rank (one 2x5 gradient: 5x5 statistics of rank
/// 2), and in the missing eigendirections SOAP's Adam divides rounding noise by rounding
/// noise (about 1e-8 over 1e-8 in float32, 1e-17 over 1e-8 in float64), so float32 and
/// float64 legitimately disagree there by a whole step; PyTorch's float32 SOAP would side
/// with the CPU backend.
fn shapes(seed: u64, name: &str, matrix_only: bool) -> Vec<Vec<usize>> {
    let pick = |k: u64, lo: usize, hi: usize| lo + (noise(seed * 31 + k, 1)[0].abs() * (hi - lo) as f32) as usize;
    let small = name == "shampoo" || name == "soap";
    let n = pick(1, 2, 9);
    let mut s = if name == "soap" { vec![vec![n, n]] } else { vec![vec![n, pick(2, 2, 9)]] };
    s.push(vec![1, 1]);
    if !small {
        s.push(vec![pick(3, 9, 40), pick(4, 1, 5)]);
    }
    if !matrix_only {
        let long = if small { pick(6, 21, 40) } else { pick(6, 1000, 1100) };
        s.extend([vec![1], vec![pick(5, 2, 20)], vec![long]]);
        if name != "soap" {
            s.push(vec![3, 2, pick(7, 1, 4)]);
        }
    }
    s
}

/// Random hyperparameters within declared ranges: a float default in (0.5, 1) (a decay
/// rate) keeps 1 - d scaled by [0.5, 2); a zero default becomes [0, 0.9); any other float
/// is scaled by [0.5, 2); bools at random; ints anywhere in their range (capped at 12).
fn random_hypers(program: &Program, seed: u64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (i, h) in program.plan().module.hypers.iter().enumerate() {
        let u = f64::from(noise(seed * 977 + i as u64, 1)[0].abs());
        let (lo, hi) = h.range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let value = match h.ty {
            HyperTy::Bool => f64::from(u8::from(u > 0.5)),
            HyperTy::Int => (lo.max(0.0) + (u * (hi.min(12.0) - lo.max(0.0) + 1.0)).floor()).min(hi.min(12.0)),
            HyperTy::F32 if h.default > 0.5 && h.default < 1.0 => {
                (1.0 - (1.0 - h.default) * (0.5 + 1.5 * u)).clamp(lo, hi)
            }
            HyperTy::F32 if h.default == 0.0 => (0.9 * u).clamp(lo, hi),
            HyperTy::F32 => (h.default * (0.5 + 1.5 * u)).clamp(lo, hi),
        };
        out.push((h.name.clone(), value));
    }
    out
}

/// Runs `steps` steps on `backend`; returns the parameters after each step.
fn run(program: &Program, specs: &[ParamSpec], backend: Backend, seed: u64, steps: usize) -> Vec<Vec<Vec<f32>>> {
    let mut opt = Optimizer::with_options(program, specs, Options { backend, threads: Some(2) }).expect("binds");
    if seed > 3 {
        for (name, value) in random_hypers(program, seed) {
            opt.set_hyper(&name, value).unwrap_or_else(|e| panic!("{name} = {value}: {e}"));
        }
    }
    let mut params: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(seed + i as u64, s.numel())).collect();
    let mut out = Vec::new();
    for t in 0..steps {
        let grads: Vec<Vec<f32>> =
            specs.iter().enumerate().map(|(i, s)| noise(seed * 1000 + (t * 50 + i) as u64, s.numel())).collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
        out.push(params.clone());
    }
    out
}

#[test]
fn cpu_agrees_with_the_interpreter_on_random_shapes_and_data() {
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for entry in OPTIMIZERS {
        let program = Program::compile(&source(entry.name)).expect("compiles");
        // Seeds 1-3 run the defaults; 4-9 random hyperparameters (flags on and off, so
        // every loop version of the CPU kernels runs).
        for seed in 1..=9u64 {
            let specs: Vec<ParamSpec> = shapes(seed, entry.name, entry.matrix_only)
                .iter()
                .enumerate()
                .map(|(i, s)| ParamSpec::new(format!("p{i}"), s))
                .collect();
            let want = run(&program, &specs, Backend::Interp, seed, 4);
            let got = run(&program, &specs, Backend::Cpu, seed, 4);
            let mut worst = 0.0f64;
            let (mut finite, mut total) = (0usize, 0usize);
            for (t, (w, g)) in want.iter().zip(&got).enumerate() {
                for (pi, (wp, gp)) in w.iter().zip(g).enumerate() {
                    // Each step moves a parameter by about lr; float32 rounding of the
                    // update and of the parameter bounds the difference.
                    let scale = wp.iter().filter(|x| x.is_finite()).fold(0.0f32, |a, x| a.max(x.abs())).max(1.0);
                    for (j, (a, b)) in wp.iter().zip(gp).enumerate() {
                        total += 1;
                        finite += usize::from(a.is_finite());
                        let both_nan = a.is_nan() && b.is_nan();
                        let same_inf = a.is_infinite() && a == b;
                        let err = if both_nan || same_inf {
                            0.0
                        } else {
                            f64::from((a - b).abs()) / (1e-4 * f64::from(scale))
                        };
                        if err.is_nan() || err > 1.0 {
                            failures.push(format!(
                                "{} seed {seed} step {} {}{:?}[{j}]: interp {a}, cpu {b}",
                                entry.name,
                                t + 1,
                                specs[pi].name,
                                specs[pi].shape
                            ));
                        }
                        worst = worst.max(err);
                    }
                }
            }
            report.push(format!("{:20} seed {seed}: worst {worst:.4} of tolerance", entry.name));
            // The comparison must not be vacuous: most reference values are numbers.
            if finite * 10 < total * 9 {
                failures.push(format!("{} seed {seed}: only {finite} of {total} values are finite", entry.name));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{} disagreements, first: {:?}", failures.len(), &failures[..failures.len().min(10)]);
}

#[test]
fn empty_tensors_are_refused_on_both_backends() {
    let program = Program::compile(&source("adamw")).expect("compiles");
    for backend in [Backend::Cpu, Backend::Interp] {
        let e = Optimizer::with_options(&program, &[ParamSpec::new("w", &[0, 4])], Options { backend, threads: None })
            .err()
            .expect("an empty tensor is refused");
        assert!(e.to_string().contains("parameter `w` of shape [0, 4] has no elements"), "{e}");
    }
}
