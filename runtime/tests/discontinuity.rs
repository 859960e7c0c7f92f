//! `verify::reconcile`: a value that only the float32-rounded reference explains counts as a
//! flip of a discontinuous operation, in a program that has one, and is never a failure;
//! a value neither reference explains still fails; a program without a discontinuous
//! operation never asks for the second opinion. And the float32-rounded interpreter rounds
//! as a float32 backend does: `sign` of a momentum that cancels exactly in float32.

use gdc_runtime::verify::{has_discontinuity, reconcile, Trajectory};
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};

/// Signum, as `gdc verify`'s test steps it (cli/tests/optimizers/signum.gd).
fn signum() -> Program {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/tests/optimizers/signum.gd");
    Program::compile(&std::fs::read_to_string(path).expect("reads")).expect("compiles")
}

const SGD: &str = "optimizer sgd {
  hyper lr = 0.01
  update(p, g) {
    p = p - lr * g
  }
}";

fn one_step(values: &[f32]) -> Trajectory {
    vec![vec![values.to_vec()]]
}

#[test]
fn flips_are_counted_and_real_disagreements_still_fail() {
    let program = signum();
    assert!(has_discontinuity(program.plan()));
    let specs = [ParamSpec::new("w", &[3])];
    let want = one_step(&[1.0, 0.99, 0.5]);
    let float32 = one_step(&[1.0, 1.0, 0.5]);
    // Element 1 flipped (the float32 reference explains it).
    let got = one_step(&[1.0, 1.0, 0.5]);
    let a = reconcile(&program, &want, &got, &specs, || Ok::<_, ()>(float32.clone())).expect("compares");
    assert_eq!((a.first.is_none(), a.flipped, a.total), (true, 1, 3), "{a:?}");
    // Element 2 is wrong against both references: a failure, whatever else flipped.
    let got = one_step(&[1.0, 1.0, 0.7]);
    let a = reconcile(&program, &want, &got, &specs, || Ok::<_, ()>(float32.clone())).expect("compares");
    let first = a.first.expect("a real disagreement fails");
    assert!(first.contains("w[3][2]") && first.contains("float32-rounded interpreter 0.5"), "{first}");
    assert_eq!(a.flipped, 1);
    // Agreement with the float64 reference needs no second opinion.
    let a = reconcile(&program, &want, &want, &specs, || -> Result<Trajectory, ()> { panic!("not asked") });
    assert_eq!(a.expect("compares").flipped, 0);
}

#[test]
fn a_program_without_a_discontinuity_gets_no_second_opinion() {
    let program = Program::compile(SGD).expect("compiles");
    assert!(!has_discontinuity(program.plan()));
    let specs = [ParamSpec::new("w", &[1])];
    let a = reconcile(&program, &one_step(&[1.0]), &one_step(&[2.0]), &specs, || -> Result<Trajectory, ()> {
        panic!("a continuous program's disagreement is a disagreement")
    })
    .expect("compares");
    assert!(a.first.is_some() && a.flipped == 0, "{a:?}");
}

/// Two gradients for which the momentum cancels exactly in float32 (0.9 m1 + 0.1 g2 = 0
/// after rounding each product) but not in float64: the float64 reference keeps a residue
/// and `sign` jumps; the float32-rounded interpreter and the CPU both see 0.
#[test]
fn the_float32_interpreter_rounds_as_the_cpu_does() {
    let program = signum();
    let specs = [ParamSpec::new("w", &[1])];
    // m1 = 0.1 * 0.7 and 0.9 m1 + 0.1 * -0.63: exactly 0 in float32, -6e-10 in float64.
    let (g1, g2) = (0.7f32, -0.63f32);
    let run = |backend: Backend| {
        let mut opt = Optimizer::with_options(&program, &specs, Options { backend, threads: Some(1) }).expect("binds");
        let mut p = [0.0f32];
        for g in [g1, g2] {
            opt.step(&mut [&mut p[..]], &[&[g][..]]).expect("steps");
        }
        (p[0], opt.state("w", "m").expect("m")[0])
    };
    let (cpu, f32_ref, f64_ref) = (run(Backend::Cpu), run(Backend::InterpF32), run(Backend::Interp));
    assert_eq!(cpu, f32_ref, "the float32-rounded interpreter follows the float32 backend");
    assert_eq!(cpu.1, 0.0, "the momentum cancels in float32");
    assert_ne!(f64_ref.0, cpu.0, "the float64 reference keeps a residue and sign() jumps: {f64_ref:?}");
}
