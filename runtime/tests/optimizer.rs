//! The runtime's API on plain f32 memory: stepping, hyperparameters by name, and typed errors
//! for every misuse, with the state left untouched by a failed call.

use gdc_runtime::{Optimizer, ParamSpec, RuntimeError};

const ADAMW: &str = include_str!("../../examples/optimizers/adamw.gd");

fn setup() -> (Optimizer, Vec<f32>, Vec<f32>) {
    let w = vec![0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75];
    let b = vec![0.1f32, -0.2];
    let specs = [ParamSpec::new("w", &[2, 3]), ParamSpec::new("b", &[2])];
    let opt = Optimizer::from_source(ADAMW, &specs).expect("binds");
    (opt, w, b)
}

#[test]
fn a_step_moves_parameters_against_the_gradient() {
    let (mut opt, mut w, mut b) = setup();
    opt.set_hyper("weight_decay", 0.0).expect("known");
    opt.set_hyper("lr", 0.1).expect("known");
    let (w0, b0) = (w.clone(), b.clone());
    let gw = [1.0f32, -1.0, 1.0, -1.0, 1.0, -1.0];
    let gb = [0.5f32, -0.5];
    opt.step(&mut [&mut w, &mut b], &[&gw, &gb]).expect("steps");
    // Adam's first step moves every coordinate by lr against the gradient's sign.
    for (i, (x, x0)) in w.iter().zip(&w0).enumerate() {
        assert!((x - (x0 - 0.1 * gw[i].signum())).abs() < 1e-5, "w[{i}] = {x}");
    }
    assert!((b[0] - (b0[0] - 0.1)).abs() < 1e-5 && (b[1] - (b0[1] + 0.1)).abs() < 1e-5);
    assert_eq!(opt.step_count(), 1);
    let m = opt.state("w", "m").expect("state m");
    assert!((m[0] - 0.1).abs() < 1e-6, "m = (1 - beta1) g = {}", m[0]);
}

#[test]
fn misuse_is_a_typed_error_and_changes_nothing() {
    let (mut opt, mut w, mut b) = setup();
    let g6 = [1.0f32; 6];
    let g2 = [1.0f32; 2];
    let before = (w.clone(), b.clone());
    let e = opt.step(&mut [&mut w], &[&g6]).expect_err("one tensor missing");
    assert!(e.to_string().contains("expected 2 tensors, got 1"), "{e}");
    let e = opt.step(&mut [&mut w, &mut b], &[&g6, &g6]).expect_err("wrong gradient length");
    assert!(e.to_string().contains("gradient `b` has 6 elements, but its shape [2] has 2"), "{e}");
    assert_eq!((w.clone(), b.clone()), before);
    assert_eq!(opt.step_count(), 0, "a failed step is not counted");
    let e = opt.set_hyper("learning_rate", 0.1).expect_err("unknown");
    assert!(e.to_string().contains("unknown hyperparameter `learning_rate`; this optimizer has: lr, beta1"), "{e}");
    let e = opt.set_hyper("lr", f64::NAN).expect_err("not a number");
    assert!(matches!(e, RuntimeError::Step(_)), "{e}");
    assert_eq!(opt.hyper("lr"), Some(1e-3));
    opt.step(&mut [&mut w, &mut b], &[&g6, &g2]).expect("still usable");
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn binding_errors_are_typed() {
    let dup = Optimizer::from_source(ADAMW, &[ParamSpec::new("w", &[4]), ParamSpec::new("w", &[4])]);
    assert!(matches!(dup, Err(RuntimeError::DuplicateParam(n)) if n == "w"));
    let mut short = Optimizer::from_source(ADAMW, &[ParamSpec::new("w", &[5])]).expect("binds");
    let e = short.step(&mut [&mut [0.0f32; 4]], &[&[0.0f32; 4]]).expect_err("4 values for a shape of 5");
    assert!(e.to_string().contains("parameter `w` has 4 elements, but its shape [5] has 5"), "{e}");
    let huge = Optimizer::from_source(
        include_str!("../../examples/optimizers/shampoo.gd"),
        &[ParamSpec::new("v", &[100_000])],
    );
    assert!(huge.err().is_some_and(|e| e.to_string().contains("needs a state `L` of 10000000000 elements")));
    let broken = Optimizer::from_source("optimizer x { update(p, g) { p = q } }", &[ParamSpec::new("w", &[4])]);
    assert!(broken.err().is_some_and(|e| e.to_string().contains("unknown name `q`")));
    let muon = include_str!("../../examples/optimizers/muon.gd");
    let vector = Optimizer::from_source(muon, &[ParamSpec::new("bias", &[4])]);
    assert!(vector.err().is_some_and(|e| e.to_string().contains("only updates matrices")));
}

#[test]
fn state_is_initialised_at_the_first_step_with_the_hyperparameters_then_in_force() {
    let src = include_str!("../../examples/optimizers/adagrad.gd");
    let mut w = vec![1.0f32, 2.0];
    let mut opt = Optimizer::from_source(src, &[ParamSpec::new("w", &[2])]).expect("binds");
    assert_eq!(opt.state("w", "sum_sq"), None, "no state before the first step");
    opt.set_hyper("initial_accumulator_value", 0.5).expect("known");
    opt.step(&mut [&mut w], &[&[1.0, -2.0]]).expect("steps");
    assert_eq!(opt.state("w", "sum_sq"), Some(vec![1.5, 4.5]), "0.5 + g^2");
}
