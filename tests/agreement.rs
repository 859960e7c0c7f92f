//! The CPU backend agrees with the reference interpreter: every example optimizer, on
//! random shapes (one element, sizes that are not a multiple of the vector width, matrices
//! and higher ranks), random data and random hyperparameters (every flag on and off), for
//! several steps, within a tolerance derived from float32 rounding. Empty tensors are
//! refused with an error on both.

use gdc_runtime::verify::{compare, trajectory};
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};
use gdc_tests::{source, OPTIMIZERS};

fn noise(seed: u64, n: usize) -> Vec<f32> {
    gdc_runtime::verify::noise_f32(seed, n)
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
    let small = matches!(name, "shampoo" | "grafted_shampoo" | "soap");
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
            let options = |backend| Options { backend, threads: Some(2) };
            let want = trajectory(&program, &specs, options(Backend::Interp), seed, 4).expect("the interpreter steps");
            let got = trajectory(&program, &specs, options(Backend::Cpu), seed, 4).expect("the CPU steps");
            let agreement = compare(&want, &got, &specs);
            let worst = agreement.worst;
            if let Some(first) = agreement.first {
                failures.push(format!("{} seed {seed}: {first}", entry.name));
            }
            report.push(format!("{:20} seed {seed}: worst {worst:.4} of tolerance", entry.name));
            // The comparison must not be vacuous: most reference values are numbers.
            let (finite, total) = (agreement.finite, agreement.total);
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
