//! Per-axis state (`state acc: [axes]`, `axis_min`, `axis_max`): SM3 on parameters of rank
//! 0, 3 and 4 keeps one accumulator per index of each axis, each the largest g² over the
//! other axes after a first step, on the CPU and the interpreter; such parameters take the
//! `update(p, g)` that keeps per-axis state, while an optimizer without one (Adafactor)
//! still views them as matrices; the state is checkpointed with its `[axes]` length.

use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};

const SHAPES: [&[usize]; 3] = [&[3, 4, 5], &[], &[2, 1, 3, 2]];

fn specs() -> Vec<ParamSpec> {
    ["t", "s", "k"].into_iter().zip(SHAPES).map(|(n, s)| ParamSpec::new(n, s)).collect()
}

fn grads(step: usize) -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let n: usize = s.iter().product();
            (0..n).map(|i| (((i * 11 + k * 3 + step * 5) % 13) as f32 - 6.0) * 0.25).collect()
        })
        .collect()
}

fn example(name: &str) -> Program {
    let path = format!("{}/../examples/optimizers/{name}.gd", env!("CARGO_MANIFEST_DIR"));
    Program::compile_file(path).expect("compiles")
}

fn stepped(program: &Program, backend: Backend, steps: usize) -> (Optimizer, Vec<Vec<f32>>) {
    let mut opt = Optimizer::with_options(program, &specs(), Options { backend, threads: Some(2) }).expect("binds");
    let mut params: Vec<Vec<f32>> = SHAPES.iter().map(|s| vec![0.5; s.iter().product()]).collect();
    for s in 0..steps {
        let g = grads(s);
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
    }
    (opt, params)
}

/// Per axis and index, the largest g² over the other axes (what the accumulators hold after
/// a first step from zero), axis after axis.
fn cover(shape: &[usize], g: &[f32]) -> Vec<f32> {
    let dims: Vec<usize> = if shape.is_empty() { vec![1] } else { shape.to_vec() };
    let mut out: Vec<Vec<f32>> = dims.iter().map(|d| vec![f32::NEG_INFINITY; *d]).collect();
    for (flat, x) in g.iter().enumerate() {
        let mut rest = flat;
        for k in (0..dims.len()).rev() {
            let i = rest % dims[k];
            rest /= dims[k];
            out[k][i] = out[k][i].max(x * x);
        }
    }
    out.concat()
}

#[test]
fn sm3_keeps_one_accumulator_per_index_of_each_axis() {
    let program = example("sm3");
    let g = grads(0);
    for backend in [Backend::Cpu, Backend::Interp] {
        let (opt, _) = stepped(&program, backend, 1);
        for ((name, shape), gi) in ["t", "s", "k"].iter().zip(SHAPES).zip(&g) {
            let acc = opt.state(name, "acc_axes").expect("per-axis state");
            assert_eq!(acc, cover(shape, gi), "{backend:?}: `{name}`");
            assert!(opt.state(name, "acc_rows").is_none(), "{backend:?}: `{name}` is not viewed as a matrix");
        }
    }
    // Several steps: the CPU (float32) and the interpreter (float64) agree.
    let (_, cpu) = stepped(&program, Backend::Cpu, 6);
    let (_, interp) = stepped(&program, Backend::Interp, 6);
    for (a, b) in cpu.iter().flatten().zip(interp.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "CPU {a}, interpreter {b}");
    }
}

#[test]
fn without_per_axis_state_a_tensor_is_still_viewed_as_a_matrix() {
    let (opt, _) = stepped(&example("adafactor"), Backend::Cpu, 1);
    assert_eq!(opt.state("t", "row_var").map(|v| v.len()), Some(3), "[3, 4, 5] is [3, 20]");
    assert_eq!(opt.state("t", "col_var").map(|v| v.len()), Some(20));
}

#[test]
fn per_axis_state_is_checkpointed_with_its_length() {
    let program = example("sm3");
    let (opt, _) = stepped(&program, Backend::Cpu, 2);
    let layout = opt.state_layout().expect("layout");
    let acc: Vec<(String, Vec<usize>)> =
        layout.iter().filter(|(_, s, _)| s == "acc_axes").map(|(p, _, shape)| (p.clone(), shape.clone())).collect();
    let want = vec![("t".to_string(), vec![12]), ("s".to_string(), vec![1]), ("k".to_string(), vec![8])];
    assert_eq!(acc, want);
    let path = std::env::temp_dir().join(format!("gdc-per-axis-{}.safetensors", std::process::id()));
    opt.save_checkpoint(&path).expect("saves");
    let mut fresh = Optimizer::with_options(&program, &specs(), Options { backend: Backend::Cpu, threads: Some(2) })
        .expect("binds");
    fresh.load_checkpoint(&path).expect("loads");
    let _ = std::fs::remove_file(&path);
    for name in ["t", "s", "k"] {
        assert_eq!(fresh.state(name, "acc_axes"), opt.state(name, "acc_axes"), "`{name}`");
    }
}
