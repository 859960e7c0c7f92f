//! The non-finite gradient policy (`Optimizer::set_non_finite`): one NaN, +inf or -inf
//! injected into one element of one gradient — first, last, past a CPU chunk boundary, in a
//! matrix, in one matrix of a batched parameter — on the CPU backend and the interpreter.
//!
//! - `SkipStep`: every parameter, every state and the step count are bit for bit as before,
//!   the skip is counted, and training continues exactly as if the step never came.
//! - `Error`: the same, returning `RuntimeError::NonFiniteGradient` that names the
//!   parameter and counts its bad elements, and counting no skip.
//! - `Propagate` (the default): the value flows through as the arithmetic takes it.
//!
//! Programs: AdamW (elementwise), AdamW after global-norm clipping (a reduction over every
//! parameter, which a single NaN would poison everywhere), the Muon/AdamW policy (two update
//! variants) and a batched Muon (`update(p: [..., rows, cols], g)`).

use gdc_runtime::verify::noise_f32;
use gdc_runtime::{Backend, NonFinite, Optimizer, Options, ParamSpec, Program, RuntimeError};

fn example(name: &str) -> Program {
    let path = format!("{}/../examples/optimizers/{name}.gd", env!("CARGO_MANIFEST_DIR"));
    Program::compile_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const BATCHED_MUON: &str = "
optimizer muon_experts {
  hyper lr = 0.02
  hyper momentum = 0.95
  state buf = zeros
  update(p: [..., rows, cols], g) {
    buf = momentum * buf + g
    var x = buf / (norm(buf) + 1e-7)
    for i in 0..3 {
      let s = x @ x.T
      x = 3.4445 * x + (-4.775 * s + 2.0315 * s @ s) @ x
    }
    p = p - lr * x
  }
}";

/// A program, its parameters, and where to inject: (parameter index, element index).
struct Case {
    name: &'static str,
    program: Program,
    specs: Vec<ParamSpec>,
    spots: Vec<(usize, usize)>,
}

fn cases() -> Vec<Case> {
    let vector_specs =
        || vec![ParamSpec::new("w", &[7, 5]), ParamSpec::new("long", &[70_000]), ParamSpec::new("b", &[3])];
    // Element 65,537 of `long` lies in the CPU engine's second chunk of 65,536.
    let vector_spots = vec![(0, 0), (0, 34), (1, 65_537), (1, 69_999), (2, 1)];
    vec![
        Case { name: "adamw", program: example("adamw"), specs: vector_specs(), spots: vector_spots.clone() },
        Case {
            name: "adamw_clip_cosine",
            program: example("adamw_clip_cosine"),
            specs: vector_specs(),
            spots: vector_spots,
        },
        Case {
            name: "muon_adamw",
            program: example("muon_adamw"),
            specs: vec![
                ParamSpec::new("hidden", &[6, 4]).with_role(gdc_runtime::Role::Hidden),
                ParamSpec::new("bias", &[4]).with_role(gdc_runtime::Role::Bias),
            ],
            spots: vec![(0, 0), (0, 23), (1, 2)],
        },
        Case {
            name: "batched muon",
            program: Program::compile(BATCHED_MUON).expect("compiles"),
            specs: vec![ParamSpec::new("experts", &[3, 4, 5]), ParamSpec::new("w", &[2, 2])],
            // Element 27 is in the second matrix, `experts[1]`.
            spots: vec![(0, 27), (0, 59), (1, 3)],
        },
    ]
}

/// Everything a step may change: the parameters, every state of every member, the count.
#[derive(Debug, PartialEq)]
struct Snapshot {
    params: Vec<Vec<u32>>,
    states: Vec<Option<Vec<u32>>>,
    steps: u64,
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn snapshot(opt: &Optimizer, params: &[Vec<f32>]) -> Snapshot {
    let states = opt.program().plan().module.states.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for m in opt.members() {
        for s in &states {
            out.push(opt.state(&m.name, s).map(|v| bits(&v)));
        }
    }
    Snapshot { params: params.iter().map(|p| bits(p)).collect(), states: out, steps: opt.step_count() }
}

fn grads(specs: &[ParamSpec], t: u64) -> Vec<Vec<f32>> {
    specs.iter().enumerate().map(|(i, s)| noise_f32(1000 * t + i as u64 + 1, s.numel())).collect()
}

fn step(opt: &mut Optimizer, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> Result<(), RuntimeError> {
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    opt.step(&mut views, &gviews)
}

fn new(program: &Program, case: &Case, backend: Backend) -> (Optimizer, Vec<Vec<f32>>) {
    let opt = Optimizer::with_options(program, &case.specs, Options { backend, threads: Some(2) }).expect("binds");
    let params = case.specs.iter().enumerate().map(|(i, s)| noise_f32(i as u64 + 7, s.numel())).collect();
    (opt, params)
}

#[test]
fn a_skipped_or_refused_step_changes_nothing_and_training_goes_on_as_if_it_never_came() {
    for case in cases() {
        let program = &case.program;
        for backend in [Backend::Cpu, Backend::Interp] {
            // The reference: two finite steps, then two more.
            let (mut reference, mut ref_params) = new(program, &case, backend);
            for t in [1, 2, 4, 5] {
                step(&mut reference, &mut ref_params, &grads(&case.specs, t)).expect("a finite step");
            }
            for &(pi, j) in &case.spots {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    for policy in [NonFinite::SkipStep, NonFinite::Error] {
                        let what =
                            format!("{} on {backend:?}, {bad} at {}[{j}], {policy:?}", case.name, case.specs[pi].name);
                        let (mut opt, mut params) = new(program, &case, backend);
                        opt.set_non_finite(policy);
                        for t in [1, 2] {
                            step(&mut opt, &mut params, &grads(&case.specs, t)).expect("a finite step");
                        }
                        let before = snapshot(&opt, &params);
                        let mut g = grads(&case.specs, 3);
                        g[pi][j] = bad;
                        let result = step(&mut opt, &mut params, &g);
                        match (policy, result) {
                            (NonFinite::SkipStep, Ok(())) => assert_eq!(opt.skipped_steps(), 1, "{what}"),
                            (NonFinite::Error, Err(RuntimeError::NonFiniteGradient { param, count, step, .. })) => {
                                assert_eq!(param, case.specs[pi].name, "{what}");
                                assert_eq!((count, step), (1, 3), "{what}");
                                assert_eq!(opt.skipped_steps(), 0, "{what}");
                            }
                            (_, other) => panic!("{what}: {other:?}"),
                        }
                        assert_eq!(snapshot(&opt, &params), before, "{what}: the step changed something");
                        for t in [4, 5] {
                            step(&mut opt, &mut params, &grads(&case.specs, t)).expect("a finite step");
                        }
                        assert_eq!(
                            snapshot(&opt, &params),
                            snapshot(&reference, &ref_params),
                            "{what}: training after the bad step differs from training without it"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn by_default_a_nan_flows_through_and_the_error_names_every_bad_gradient() {
    let case = &cases()[1];
    let program = &case.program;
    for backend in [Backend::Cpu, Backend::Interp] {
        let (mut opt, mut params) = new(program, case, backend);
        assert_eq!(opt.non_finite(), NonFinite::Propagate);
        let mut g = grads(&case.specs, 1);
        g[1][65_537] = f32::NAN;
        step(&mut opt, &mut params, &g).expect("steps");
        // Global-norm clipping: one NaN makes the norm NaN, and every parameter NaN.
        for (p, spec) in params.iter().zip(&case.specs) {
            assert!(p.iter().all(|x| x.is_nan()), "{backend:?}: `{}` should be all NaN", spec.name);
        }
        assert_eq!((opt.step_count(), opt.skipped_steps()), (1, 0));

        // Several bad elements in several parameters: all counted, the first one named.
        let (mut opt, mut params) = new(program, case, backend);
        opt.set_non_finite(NonFinite::Error);
        let mut g = grads(&case.specs, 1);
        for j in [3, 4, 60_000] {
            g[1][j] = f32::INFINITY;
        }
        g[2][0] = f32::NAN;
        let err = step(&mut opt, &mut params, &g).expect_err("refused");
        match &err {
            RuntimeError::NonFiniteGradient { param, count, total, others, step } => {
                assert_eq!((param.as_str(), *count, *total, *others, *step), ("long", 3, 4, 1, 1), "{backend:?}");
            }
            other => panic!("{backend:?}: {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("`long`") && text.contains("nothing was changed") && text.contains("SkipStep"), "{text}");
        // The policy can change between steps: the same gradients, now skipped twice.
        opt.set_non_finite(NonFinite::SkipStep);
        step(&mut opt, &mut params, &g).expect("skipped");
        step(&mut opt, &mut params, &g).expect("skipped");
        assert_eq!((opt.step_count(), opt.skipped_steps()), (0, 2), "{backend:?}");
    }
}

#[test]
fn the_check_is_in_the_plan_and_costs_a_step_nothing() {
    // Every update plan ends with its gradient check; a step does not run it, and the bytes
    // a step moves (counted from the plan) do not include it.
    let program = example("adamw");
    let text = gdc_compiler::plan::print::plan_text(program.plan());
    assert!(text.contains("(gradient check, run apart)"), "{text}");
    let n = 1000usize;
    let bytes = gdc_runtime::bench::bytes_per_step(program.plan(), &[ParamSpec::new("w", &[n])]).expect("binds");
    assert_eq!(bytes, 7 * 4 * n as u64, "AdamW moves p, g, m, v in and p, m, v out");
}

#[test]
fn the_skip_count_survives_a_checkpoint() {
    let case = &cases()[0];
    let (mut opt, mut params) = new(&case.program, case, Backend::Cpu);
    opt.set_non_finite(NonFinite::SkipStep);
    step(&mut opt, &mut params, &grads(&case.specs, 1)).expect("steps");
    let mut g = grads(&case.specs, 2);
    g[0][0] = f32::NAN;
    step(&mut opt, &mut params, &g).expect("skipped");
    let path = std::env::temp_dir().join(format!("gdc-non-finite-{}.safetensors", std::process::id()));
    opt.save_checkpoint(&path).expect("saves");
    let (mut resumed, _) = new(&case.program, case, Backend::Cpu);
    resumed.load_checkpoint(&path).expect("loads");
    let _ = std::fs::remove_file(&path);
    assert_eq!((resumed.step_count(), resumed.skipped_steps()), (1, 1));
    // The policy is the training code's choice, not the checkpoint's.
    assert_eq!(resumed.non_finite(), NonFinite::Propagate);
}
