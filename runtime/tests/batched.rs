//! Batched matrix parameters (`update(p: [..., rows, cols], g)`): a `[b1, ..., bk, r, c]`
//! parameter steps exactly as `b1*...*bk` separate `[r, c]` parameters, on the CPU backend
//! and on the interpreter; misuse names the parameter as the caller gave it.

use gdc_runtime::verify::{self, noise_f32};
use gdc_runtime::{Backend, InterpError, Optimizer, Options, ParamSpec, Program, RuntimeError};

const MUON: &str = include_str!("../../examples/optimizers/muon.gd");

fn cpu() -> Options {
    Options { backend: Backend::Cpu, threads: Some(2) }
}

/// Steps Muon on one batched parameter of `shape` and on its matrices as separate
/// parameters, from the same values and gradient slices, and checks that parameters and
/// state agree bit for bit after every step.
fn batched_equals_separate(shape: &[usize], options: Options) {
    let program = Program::compile(MUON).expect("muon compiles");
    let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let numel: usize = shape.iter().product();
    let count = numel / (r * c);
    let mut batched = Optimizer::with_options(&program, &[ParamSpec::new("w", shape)], options).expect("binds");
    let specs: Vec<ParamSpec> = (0..count).map(|i| ParamSpec::new(format!("m{i}"), &[r, c])).collect();
    let mut separate = Optimizer::with_options(&program, &specs, options).expect("binds");
    for opt in [&mut batched, &mut separate] {
        opt.set_hyper("lr", 0.02).expect("known");
    }
    let names: Vec<String> = batched.members().iter().map(|m| m.name.clone()).collect();
    let want: Vec<String> = (0..count).map(|i| format!("w[{i}]")).collect();
    assert_eq!(names, want, "one member per matrix, by flat batch index");

    let mut w = noise_f32(7, numel);
    let mut parts: Vec<Vec<f32>> = w.chunks(r * c).map(<[f32]>::to_vec).collect();
    for step in 0..3 {
        let g = noise_f32(100 + step, numel);
        batched.step(&mut [&mut w], &[&g]).expect("batched step");
        let mut views: Vec<&mut [f32]> = parts.iter_mut().map(Vec::as_mut_slice).collect();
        let gviews: Vec<&[f32]> = g.chunks(r * c).collect();
        separate.step(&mut views, &gviews).expect("separate step");
        let joined: Vec<f32> = parts.concat();
        assert_eq!(w.len(), joined.len());
        for (j, (a, b)) in w.iter().zip(&joined).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{shape:?} step {}: w[{j}] = {a}, separately {b}", step + 1);
        }
        let mut whole = Vec::new();
        for i in 0..count {
            let mine = batched.state(&format!("w[{i}]"), "buf").expect("member state");
            let theirs = separate.state(&format!("m{i}"), "buf").expect("state");
            assert_eq!(mine.len(), r * c);
            assert!(
                mine.iter().zip(&theirs).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{shape:?} step {}: state buf of matrix {i} differs",
                step + 1
            );
            whole.extend(mine);
        }
        assert_eq!(batched.state("w", "buf"), Some(whole), "the parameter's state is its matrices' in order");
    }
}

#[test]
fn a_batch_of_four_matrices_steps_as_four_parameters() {
    batched_equals_separate(&[4, 8, 6], cpu());
}

#[test]
fn two_batch_dimensions_step_as_six_parameters() {
    batched_equals_separate(&[2, 3, 8, 6], cpu());
}

#[test]
fn the_interpreter_splits_batches_the_same_way() {
    batched_equals_separate(&[3, 5, 7], Options { backend: Backend::Interp, threads: None });
}

#[test]
fn each_matrix_is_orthogonalised_on_its_own() {
    // Two matrices whose gradients differ only by a factor: each is normalised by its own
    // norm, so both take the same step (one norm over the batch would not do that).
    let program = Program::compile(MUON).expect("compiles");
    let mut opt = Optimizer::with_options(&program, &[ParamSpec::new("w", &[2, 4, 3])], cpu()).expect("binds");
    opt.set_hyper("weight_decay", 0.0).expect("known");
    let g1 = noise_f32(3, 12);
    let g: Vec<f32> = g1.iter().chain(g1.iter().map(|x| x * 100.0).collect::<Vec<_>>().iter()).copied().collect();
    let mut w = vec![0.0f32; 24];
    opt.step(&mut [&mut w], &[&g]).expect("steps");
    for j in 0..12 {
        assert!(
            (w[j] - w[12 + j]).abs() <= 1e-4 * w[j].abs().max(1e-3),
            "w[{j}] = {}, w[{}] = {}",
            w[j],
            12 + j,
            w[12 + j]
        );
    }
    assert!(w.iter().any(|x| *x != 0.0), "the step moved the parameter");
}

#[test]
fn the_cpu_backend_agrees_with_the_interpreter_on_batches() {
    let program = Program::compile(MUON).expect("compiles");
    let specs =
        [ParamSpec::new("experts", &[3, 5, 4]), ParamSpec::new("qkv", &[3, 6, 6]), ParamSpec::new("w", &[4, 7])];
    for seed in [1, 5] {
        let a = verify::check(&program, &specs, cpu(), seed, 3).expect("runs");
        assert!(a.worst <= 1.0, "seed {seed}: worst {} at {:?}", a.worst, a.first);
        assert_eq!(a.total, 3 * (60 + 108 + 28));
    }
}

#[test]
fn a_wrong_length_names_the_batched_parameter() {
    let program = Program::compile(MUON).expect("compiles");
    for backend in [Backend::Cpu, Backend::Interp] {
        let options = Options { backend, threads: Some(1) };
        let mut opt = Optimizer::with_options(&program, &[ParamSpec::new("w", &[4, 8, 6])], options).expect("binds");
        let mut w = vec![0.5f32; 192];
        let g = vec![1.0f32; 48];
        let err = opt.step(&mut [&mut w], &[&g]).expect_err("a gradient of one matrix is refused");
        match err {
            RuntimeError::Step(InterpError::Length { what, param, shape, expected, got }) => {
                assert_eq!((what, param.as_str(), shape, expected, got), ("gradient", "w", vec![4, 8, 6], 192, 48));
            }
            other => panic!("{backend:?}: expected a length error, got {other}"),
        }
        let mut short = vec![0.5f32; 191];
        let g = vec![1.0f32; 192];
        let err = opt.step(&mut [&mut short], &[&g]).expect_err("a short parameter is refused");
        assert!(
            matches!(&err, RuntimeError::Step(InterpError::Length { what: "parameter", param, .. }) if param == "w"),
            "{backend:?}: {err}"
        );
        assert_eq!(opt.step_count(), 0, "nothing changed");
        assert!(w.iter().all(|x| *x == 0.5));
    }
}

#[test]
fn a_member_name_cannot_clash_with_a_parameter() {
    let specs = [ParamSpec::new("w", &[2, 3, 3]), ParamSpec::new("w[1]", &[3, 3])];
    match Optimizer::from_source(MUON, &specs) {
        Err(RuntimeError::DuplicateParam(name)) => assert_eq!(name, "w[1]"),
        other => panic!("expected a duplicate name, got {:?}", other.err().map(|e| e.to_string())),
    }
}

#[test]
fn checkpoints_key_batched_state_by_member() {
    let program = Program::compile(MUON).expect("compiles");
    let specs = [ParamSpec::new("w", &[3, 4, 5])];
    let mut opt = Optimizer::with_options(&program, &specs, cpu()).expect("binds");
    let mut w = noise_f32(1, 60);
    let g = noise_f32(2, 60);
    opt.step(&mut [&mut w], &[&g]).expect("steps");
    let dir = std::env::temp_dir().join(format!("gdc-batched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("muon.safetensors");
    opt.save_checkpoint(&path).expect("saves");
    let (_, tensors) = gdc_runtime::checkpoint::load(&path).expect("loads");
    let mut keys: Vec<(String, String, Vec<usize>)> =
        tensors.iter().map(|t| (t.param.clone(), t.state.clone(), t.shape.clone())).collect();
    keys.sort();
    let want: Vec<(String, String, Vec<usize>)> =
        (0..3).map(|i| (format!("w[{i}]"), "buf".to_string(), vec![4, 5])).collect();
    assert_eq!(keys, want);
    let mut resumed = Optimizer::with_options(&program, &specs, cpu()).expect("binds");
    resumed.load_checkpoint(&path).expect("restores");
    assert_eq!(resumed.state("w", "buf"), opt.state("w", "buf"));
    let mut w2 = w.clone();
    opt.step(&mut [&mut w], &[&g]).expect("steps");
    resumed.step(&mut [&mut w2], &[&g]).expect("steps");
    assert_eq!(w, w2, "a resumed optimizer continues the same trajectory");
    std::fs::remove_dir_all(&dir).ok();
}
