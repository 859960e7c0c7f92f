//! Per-step inputs through the runtime: K-FAC's `a`/`s` and Sophia-G's optional `h` handed
//! over with `step_with_inputs`, which steps a program reads them on, and a typed error that
//! changes nothing for every misuse (unknown names, wrong shapes, a missing required input).

use gdc_runtime::{Backend, Inputs, InterpError, Optimizer, Options, ParamSpec, Program, RuntimeError};

const KFAC: &str = include_str!("../../examples/optimizers/kfac.gd");
const SOPHIA: &str = include_str!("../../examples/optimizers/sophia_g.gd");

fn noise(seed: u64, n: usize) -> Vec<f32> {
    gdc_runtime::verify::noise_f32(seed, n)
}

/// K-FAC on one 3x4 weight (rows = out = 3, cols = in = 4) with `tcov` and `tinv` 2.
fn kfac(backend: Backend) -> Optimizer {
    let program = Program::compile(KFAC).expect("compiles");
    let mut opt =
        Optimizer::with_options(&program, &[ParamSpec::new("w", &[3, 4])], Options { backend, threads: Some(2) })
            .expect("binds");
    opt.set_hyper("tcov", 2.0).expect("tcov");
    opt.set_hyper("tinv", 2.0).expect("tinv");
    opt
}

#[test]
fn kfac_reads_its_statistics_only_on_the_steps_that_average_them() {
    for backend in [Backend::Cpu, Backend::Interp] {
        let mut opt = kfac(backend);
        let mut w = noise(1, 12);
        let (a, s) = (noise(2, 5 * 4), noise(3, 5 * 3));
        let want = vec![("w".to_string(), "a".to_string()), ("w".to_string(), "s".to_string())];
        // Step 1 (k = 0) averages the factors: both inputs are needed.
        assert_eq!(opt.inputs_next_step().expect("known"), want, "{backend:?}");
        let before = w.clone();
        let e = opt.step(&mut [&mut w], &[&noise(4, 12)]).expect_err("a and s are missing");
        assert!(
            matches!(&e, RuntimeError::Step(InterpError::MissingInput { param, input, step: 1 }) if param == "w" && input == "a"),
            "{backend:?}: {e}"
        );
        assert!(e.to_string().contains("nothing was stepped"), "{e}");
        assert_eq!((w.clone(), opt.step_count()), (before.clone(), 0), "{backend:?}: a refused step changes nothing");
        let mut inputs = Inputs::new();
        inputs.add("w", "a", &[5, 4], &a).add("w", "s", &[5, 3], &s);
        opt.step_with_inputs(&mut [&mut w], &[&noise(4, 12)], &inputs).expect("steps");
        // Step 2 (k = 1) uses the kept factors: nothing to collect, and none needed.
        assert_eq!(opt.inputs_next_step().expect("known"), vec![], "{backend:?}");
        opt.step(&mut [&mut w], &[&noise(5, 12)]).expect("step 2 reads no input");
        assert_eq!(opt.inputs_next_step().expect("known"), want, "{backend:?}: step 3 averages again");
        assert_ne!(w, before);
    }
}

#[test]
fn the_cpu_backend_steps_kfac_as_the_interpreter_does() {
    let (mut cpu, mut reference) = (kfac(Backend::Cpu), kfac(Backend::Interp));
    let (mut w1, mut w2) = (noise(1, 12), noise(1, 12));
    for t in 0..6u64 {
        let g = noise(10 + t, 12);
        // The batch changes from step to step (a smaller last batch, say).
        let batch = 2 + t as usize;
        let (a, s) = (noise(20 + t, batch * 4), noise(30 + t, batch * 3));
        let (sa, ss) = ([batch, 4], [batch, 3]);
        let mut inputs = Inputs::new();
        inputs.add("w", "a", &sa, &a).add("w", "s", &ss, &s);
        cpu.step_with_inputs(&mut [&mut w1], &[&g], &inputs).expect("cpu");
        reference.step_with_inputs(&mut [&mut w2], &[&g], &inputs).expect("interp");
    }
    for (x, y) in w1.iter().zip(&w2) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "cpu {x} vs interpreter {y}");
    }
    assert_ne!(w1, noise(1, 12));
}

#[test]
fn misuse_of_inputs_is_a_typed_error_and_changes_nothing() {
    let mut opt = kfac(Backend::Cpu);
    let mut w = noise(1, 12);
    let g = noise(4, 12);
    let (a, s, s6) = (noise(2, 20), noise(3, 15), noise(3, 18));
    let before = w.clone();
    type Given<'a> = Vec<(&'a str, &'a str, Vec<usize>, &'a [f32])>;
    let cases: Vec<(Given, &str)> = vec![
        (vec![("v", "a", vec![5, 4], &a)], "no parameter named `v` is bound"),
        (
            vec![("w", "h", vec![5, 4], &a)],
            "`h` (given for parameter `w`) is not an input of this optimizer; it declares: a, s",
        ),
        (
            vec![("w", "a", vec![4, 5], &a)],
            "input `a` of parameter `w` has shape [4, 5], but this optimizer declares it [batch (any), 4]",
        ),
        (vec![("w", "a", vec![5, 4, 1], &a)], "has shape [5, 4, 1]"),
        (vec![("w", "a", vec![5, 4], &s)], "input `w.a` has 15 elements, but its shape [5, 4] has 20"),
        (vec![("w", "a", vec![5, 4], &a), ("w", "a", vec![5, 4], &a)], "input `a` of parameter `w` is given twice"),
        (
            vec![("w", "a", vec![5, 4], &a), ("w", "s", vec![6, 3], &s6)],
            "parameter `w`'s inputs disagree on `batch`: 5 in `a`, 6 in `s`",
        ),
        (vec![("w", "a", vec![5, 4], &a)], "step 1 reads input `s` of parameter `w`, which it was not given"),
    ];
    for (given, message) in cases {
        let mut inputs = Inputs::new();
        for (p, n, shape, data) in &given {
            inputs.add(p, n, shape, data);
        }
        let e = opt.step_with_inputs(&mut [&mut w], &[&g], &inputs).expect_err(message);
        assert!(matches!(e, RuntimeError::Step(_)), "{e}");
        assert!(e.to_string().contains(message), "{e}\nwanted: {message}");
        assert_eq!((&w, opt.step_count()), (&before, 0));
    }
    let mut inputs = Inputs::new();
    inputs.add("w", "a", &[5, 4], &a).add("w", "s", &[5, 3], &s);
    opt.step_with_inputs(&mut [&mut w], &[&g], &inputs).expect("still usable");
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn sophia_refreshes_its_hessian_only_on_the_steps_that_carry_h() {
    let specs = [ParamSpec::new("w", &[2, 3]), ParamSpec::new("b", &[3])];
    for backend in [Backend::Cpu, Backend::Interp] {
        let program = Program::compile(SOPHIA).expect("compiles");
        let mut opt = Optimizer::with_options(&program, &specs, Options { backend, threads: Some(2) }).expect("binds");
        let (mut w, mut b) = (noise(1, 6), noise(2, 3));
        assert_eq!(opt.inputs_next_step().expect("known"), vec![], "an optional input is never required");
        opt.step(&mut [&mut w, &mut b], &[&noise(3, 6), &noise(4, 3)]).expect("no h: no refresh");
        assert_eq!(opt.state("w", "hess").expect("hess"), vec![0.0; 6], "{backend:?}");
        let h = noise(5, 6);
        let mut inputs = Inputs::new();
        inputs.add("w", "h", &[2, 3], &h);
        opt.step_with_inputs(&mut [&mut w, &mut b], &[&noise(6, 6), &noise(7, 3)], &inputs).expect("h for w only");
        let hess = opt.state("w", "hess").expect("hess");
        for (x, hi) in hess.iter().zip(&h) {
            let want = (1.0 - 0.99) * hi * hi;
            assert!((x - want).abs() <= 1e-6 * want.max(1e-6), "{backend:?}: hess {x}, want {want}");
        }
        assert_eq!(opt.state("b", "hess").expect("hess"), vec![0.0; 3], "{backend:?}: b was given no h");
        let mut bad = Inputs::new();
        bad.add("b", "h", &[1, 3], &h[..3]);
        let e = opt.step_with_inputs(&mut [&mut w, &mut b], &[&noise(6, 6), &noise(7, 3)], &bad).expect_err("shape");
        assert!(e.to_string().contains("declares it [3] (the parameter's shape)"), "{e}");
        assert_eq!(opt.step_count(), 2);
    }
}

#[test]
fn inputs_are_not_state_and_a_checkpoint_resumes_the_same_trajectory() {
    let dir = std::env::temp_dir().join(format!("gdc-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("kfac.safetensors");
    let step = |opt: &mut Optimizer, w: &mut Vec<f32>, t: u64| {
        let (a, s) = (noise(20 + t, 12), noise(30 + t, 9));
        let mut inputs = Inputs::new();
        inputs.add("w", "a", &[3, 4], &a).add("w", "s", &[3, 3], &s);
        opt.step_with_inputs(&mut [w.as_mut_slice()], &[&noise(10 + t, 12)], &inputs).expect("steps");
    };
    let mut opt = kfac(Backend::Cpu);
    let mut w = noise(1, 12);
    for t in 0..3 {
        step(&mut opt, &mut w, t);
    }
    opt.save_checkpoint(&path).expect("saves");
    let layout: Vec<String> = opt.state_layout().expect("layout").into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(layout, ["A", "G", "QA", "dA", "QG", "dG", "buf"], "the inputs are not kept");
    let mut resumed = kfac(Backend::Cpu);
    resumed.load_checkpoint(&path).expect("loads");
    let mut w2 = w.clone();
    for t in 3..6 {
        step(&mut opt, &mut w, t);
        step(&mut resumed, &mut w2, t);
    }
    assert_eq!(w, w2, "the resumed optimizer takes the same steps");
    std::fs::remove_dir_all(&dir).ok();
}
