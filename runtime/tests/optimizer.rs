//! The runtime's API on plain f32 memory: stepping, hyperparameters by name, and typed errors
//! for every misuse, with the state left untouched by a failed call.

use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program, RuntimeError};

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

/// A scratch directory of this test process.
fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gdc-runtime-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn grads(seed: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0).collect()
}

#[test]
fn a_checkpoint_resumes_exactly_by_parameter_name() {
    let dir = scratch("resume");
    let path = dir.join("opt.safetensors");
    let specs = [ParamSpec::new("w", &[2, 3]), ParamSpec::new("b", &[2])];
    let (mut w, mut b) = (vec![0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75], vec![0.1f32, -0.2]);
    let mut opt = Optimizer::from_source(ADAMW, &specs).expect("binds");
    opt.set_hyper("lr", 0.05).expect("known");
    for t in 0..3 {
        opt.step(&mut [&mut w, &mut b], &[&grads(t, 6), &grads(t + 9, 2)]).expect("steps");
    }
    opt.save_checkpoint(&path).expect("saves");
    // The same parameters in another order, in a fresh optimizer.
    let swapped = [ParamSpec::new("b", &[2]), ParamSpec::new("w", &[2, 3])];
    let mut resumed = Optimizer::from_source(ADAMW, &swapped).expect("binds");
    resumed.load_checkpoint(&path).expect("loads");
    assert_eq!(resumed.step_count(), 3);
    assert_eq!(resumed.hyper("lr"), Some(0.05), "hyperparameters come back");
    assert_eq!(resumed.state("w", "m"), opt.state("w", "m"));
    let (mut w2, mut b2) = (w.clone(), b.clone());
    for t in 3..6 {
        opt.step(&mut [&mut w, &mut b], &[&grads(t, 6), &grads(t + 9, 2)]).expect("steps");
        resumed.step(&mut [&mut b2, &mut w2], &[&grads(t + 9, 2), &grads(t, 6)]).expect("steps");
    }
    assert_eq!((w, b), (w2, b2), "bit-identical after resuming");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_checkpoint_of_another_program_or_parameter_list_is_refused_and_changes_nothing() {
    let dir = scratch("mismatch");
    let path = dir.join("opt.safetensors");
    let mut w = vec![1.0f32; 4];
    let mut opt = Optimizer::from_source(ADAMW, &[ParamSpec::new("w", &[4])]).expect("binds");
    opt.step(&mut [&mut w], &[&[0.5; 4]]).expect("steps");
    opt.save_checkpoint(&path).expect("saves");
    let lion = include_str!("../../examples/optimizers/lion.gd");
    let mut other = Optimizer::from_source(lion, &[ParamSpec::new("w", &[4])]).expect("binds");
    let e = other.load_checkpoint(&path).expect_err("another program");
    assert!(matches!(e, RuntimeError::Checkpoint(_)) && e.to_string().contains("adamw"), "{e}");
    assert_eq!(other.step_count(), 0);
    let mut renamed = Optimizer::from_source(ADAMW, &[ParamSpec::new("v", &[4])]).expect("binds");
    let e = renamed.load_checkpoint(&path).expect_err("another parameter");
    assert!(e.to_string().contains("`v`") || e.to_string().contains("`w`"), "{e}");
    let mut reshaped = Optimizer::from_source(ADAMW, &[ParamSpec::new("w", &[2, 2])]).expect("binds");
    assert!(reshaped.load_checkpoint(&path).is_err(), "another shape");
    // A truncated file is an error and the optimizer keeps its state.
    let bytes = std::fs::read(&path).expect("reads");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("writes");
    let before = opt.state("w", "v");
    assert!(opt.load_checkpoint(&path).is_err());
    assert_eq!((opt.step_count(), opt.state("w", "v")), (1, before));
    // The interpreter backend says it cannot checkpoint.
    let program = Program::compile(ADAMW).expect("compiles");
    let interp = Optimizer::with_options(
        &program,
        &[ParamSpec::new("w", &[4])],
        Options { backend: Backend::Interp, threads: None },
    )
    .expect("binds");
    assert!(matches!(interp.save_checkpoint(dir.join("x")), Err(RuntimeError::Unsupported(_))));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_built_artifact_loads_and_steps_like_the_source() {
    let dir = scratch("artifact");
    let path = dir.join("adamw.gdo");
    let artifact = gdc_compiler::artifact::Artifact::build(ADAMW, "adamw.gd", gdc_compiler::artifact::Target::Cpu)
        .unwrap_or_else(|_| panic!("builds"));
    artifact.write(&path).expect("writes");
    let loaded = Program::load(&path).expect("loads");
    let compiled = Program::compile(ADAMW).expect("compiles");
    assert_eq!(loaded.hash(), compiled.hash());
    let mut out = Vec::new();
    for program in [&loaded, &compiled] {
        let mut w = vec![1.0f32, -2.0, 3.0];
        let mut opt = Optimizer::new(program, &[ParamSpec::new("w", &[3])]).expect("binds");
        opt.step(&mut [&mut w], &[&[0.1, 0.2, -0.3]]).expect("steps");
        out.push(w);
    }
    assert_eq!(out[0], out[1]);
    std::fs::write(&path, b"GDC-ARTIFACT 1 5 00\n{}").expect("writes");
    assert!(matches!(Program::load(&path), Err(RuntimeError::Artifact(_))));
    assert!(matches!(Program::load(dir.join("missing.gdo")), Err(RuntimeError::Artifact(_))));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // LAMB reduces every tensor (norms): chunks are fixed and their partial sums combined
    // in chunk order, whatever the number of threads.
    let program = Program::compile(include_str!("../../examples/optimizers/lamb.gd")).expect("compiles");
    let specs = [ParamSpec::new("big", &[300, 700]), ParamSpec::new("small", &[37])];
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        let mut opt =
            Optimizer::with_options(&program, &specs, Options { backend: Backend::Cpu, threads: Some(threads) })
                .expect("binds");
        let (mut big, mut small) = (grads(1, 210_000), grads(2, 37));
        for t in 0..3 {
            opt.step(&mut [&mut big, &mut small], &[&grads(t + 3, 210_000), &grads(t + 4, 37)]).expect("steps");
        }
        results.push((big, small));
    }
    assert!(results[0] == results[1] && results[1] == results[2], "1, 2 and 3 threads differ");
    let e = Optimizer::with_options(&program, &specs, Options { backend: Backend::Cpu, threads: Some(0) });
    assert!(matches!(e, Err(RuntimeError::NoThreads)));
}

#[test]
fn optimizers_and_programs_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Optimizer>();
    send::<Program>();
    sync::<Program>();
    // Two optimizers sharing one program step in parallel threads like they do alone.
    let program = Program::compile(ADAMW).expect("compiles");
    let run = |program: Program| {
        let mut opt = Optimizer::new(&program, &[ParamSpec::new("w", &[1000])]).expect("binds");
        let mut w = grads(5, 1000);
        for t in 0..3 {
            opt.step(&mut [&mut w], &[&grads(t, 1000)]).expect("steps");
        }
        w
    };
    let alone = run(program.clone());
    let (a, b) = (program.clone(), program);
    let handles = [std::thread::spawn(move || run(a)), std::thread::spawn(move || run(b))];
    for h in handles {
        assert_eq!(h.join().expect("no panic"), alone);
    }
}

#[test]
fn checkpoints_record_each_state_with_its_declared_shape() {
    let dir = scratch("shapes");
    let path = dir.join("adafactor.safetensors");
    let src = include_str!("../../examples/optimizers/adafactor.gd");
    let mut w = vec![0.5f32; 12];
    let mut opt = Optimizer::from_source(src, &[ParamSpec::new("w", &[3, 4])]).expect("binds");
    opt.step(&mut [&mut w], &[&grads(1, 12)]).expect("steps");
    opt.save_checkpoint(&path).expect("saves");
    let (_, tensors) = gdc_runtime::checkpoint::load(&path).expect("loads");
    let shapes: Vec<(String, Vec<usize>)> = tensors.iter().map(|t| (t.state.clone(), t.shape.clone())).collect();
    assert_eq!(shapes, [("col_var".to_string(), vec![4]), ("row_var".to_string(), vec![3])]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_parameter_beyond_the_limits_is_refused_when_bound() {
    let program = Program::compile(ADAMW).expect("compiles");
    let rank17 = [1usize; 17];
    let e = Optimizer::new(&program, &[ParamSpec::new("deep", &rank17)]).err().expect("17 dimensions");
    assert!(e.to_string().contains("`deep` has 17 dimensions, more than the 16"), "{e}");
    assert!(Optimizer::new(&program, &[ParamSpec::new("ok", &[1usize; 16])]).is_ok());
    // A buffer past 2^31 elements is refused before anything is allocated.
    let e = Optimizer::new(&program, &[ParamSpec::new("huge", &[1 << 20, 1 << 12])]).err().expect("2^32 elements");
    assert!(e.to_string().contains("more than the 2147483648"), "{e}");
    // So is a shape whose element count overflows.
    let e = Optimizer::new(&program, &[ParamSpec::new("overflow", &[usize::MAX, 2])]).err().expect("overflows");
    assert!(e.to_string().contains("more than the 2147483648"), "{e}");
}
