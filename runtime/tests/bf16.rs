//! bf16 state (`state m: bf16 = zeros`): stored as bfloat16 on the CPU (half the memory),
//! each store rounded to nearest even; the CPU backend agrees with the interpreter's
//! emulation, checkpoints and swaps see float32 values, and the GPU backend and matrix
//! operations refuse it rather than run it differently.

use gdc_runtime::bench::state_bytes;
use gdc_runtime::{verify, Backend, Optimizer, Options, ParamSpec, Program, RuntimeError};

const ADAMW_BF16: &str = "
optimizer adamw_bf16 {
  hyper lr = 1e-2
  state m: bf16 = zeros
  state v: bf16 = zeros
  state ema: bf16 = p
  update(p, g) {
    m = lerp(m, g, 0.1)
    v = lerp(v, g * g, 0.001)
    p = p - lr * (m / (1 - 0.9 ^ step)) / (sqrt(v / (1 - 0.999 ^ step)) + 1e-8)
    ema = lerp(ema, p, 0.5)
  }
}";

fn cpu() -> Options {
    Options { backend: Backend::Cpu, threads: Some(2) }
}

fn specs() -> Vec<ParamSpec> {
    vec![ParamSpec::new("w", &[33, 17]), ParamSpec::new("b", &[70_001]), ParamSpec::new("s", &[3])]
}

#[test]
fn bf16_state_agrees_with_the_interpreter_and_is_bf16() {
    let program = Program::compile(ADAMW_BF16).expect("compiles");
    for seed in 1..4 {
        let a = verify::check(&program, &specs(), cpu(), seed, 5).expect("runs");
        assert!(a.worst <= 1.0, "seed {seed}: {} ({:?})", a.worst, a.first);
    }
    let mut opt = Optimizer::with_options(&program, &specs(), cpu()).expect("binds");
    let mut params: Vec<Vec<f32>> =
        specs().iter().map(|s| (0..s.numel()).map(|i| (i % 7) as f32 * 0.1).collect()).collect();
    let grads: Vec<Vec<f32>> =
        specs().iter().map(|s| (0..s.numel()).map(|i| ((i % 5) as f32 - 2.0) * 0.37).collect()).collect();
    for _ in 0..2 {
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
    }
    // Every stored value is a bfloat16: its low 16 bits are zero.
    for name in ["w", "b", "s"] {
        let m = opt.state(name, "m").expect("m");
        assert!(m.iter().all(|x| x.to_bits() & 0xFFFF == 0), "{name}: m holds float32 values");
        assert!(m.iter().any(|x| *x != 0.0), "{name}: m was written");
    }
    let (stored, as_f32) = state_bytes(program.plan(), &specs()).expect("binds");
    let n: u64 = specs().iter().map(|s| s.numel() as u64).sum();
    assert_eq!((stored, as_f32), (3 * 2 * n, 3 * 4 * n), "three bf16 states: half the bytes");
}

#[test]
fn checkpoints_and_swaps_carry_bf16_values() {
    let program = Program::compile(ADAMW_BF16).expect("compiles");
    let mut opt = Optimizer::with_options(&program, &specs(), cpu()).expect("binds");
    let mut params: Vec<Vec<f32>> =
        specs().iter().map(|s| (0..s.numel()).map(|i| (i % 11) as f32 * 0.01).collect()).collect();
    let grads: Vec<Vec<f32>> =
        specs().iter().map(|s| (0..s.numel()).map(|i| ((i % 3) as f32 - 1.0) * 0.5).collect()).collect();
    let step = |opt: &mut Optimizer, params: &mut Vec<Vec<f32>>| {
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gviews).expect("steps");
    };
    step(&mut opt, &mut params);
    let dir = std::env::temp_dir().join(format!("gdc-bf16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("c.safetensors");
    opt.save_checkpoint(&path).expect("saves");
    let mut other = Optimizer::with_options(&program, &specs(), cpu()).expect("binds");
    other.load_checkpoint(&path).expect("loads");
    for name in ["w", "b", "s"] {
        assert_eq!(other.state(name, "v"), opt.state(name, "v"), "{name}: v survives the checkpoint");
    }
    let mut p2 = params.clone();
    step(&mut opt, &mut params);
    step(&mut other, &mut p2);
    assert_eq!(params, p2, "resumed training is bit-identical");
    let ema = opt.state("b", "ema").expect("ema");
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    opt.swap_state("ema", &mut views).expect("swaps");
    assert_eq!(params[1], ema, "the parameters hold the bf16 average");
}

#[test]
fn the_gpu_and_matrix_operations_refuse_bf16_state() {
    let program = Program::compile(ADAMW_BF16).expect("compiles");
    let err = gdc_compiler::gpu::refuse_bf16(program.plan()).expect_err("refused");
    assert!(err.to_string().contains("state `m` is bf16"), "{err}");
    let src = "optimizer s { state l: bf16 [rows, rows] = eye  update(p: [rows, cols], g) { p = p - l @ g  l = l + g @ g.T } }";
    let Err(err) = Program::compile(src) else { panic!("a bf16 operand of inv_root is refused") };
    assert!(matches!(err, RuntimeError::Codegen(_)) && err.to_string().contains("read by a matrix operation"), "{err}");
}

/// bf16 parameters: stochastic rounding is unbiased, reproducible, and moves weights by
/// updates far below a bfloat16 step, where round-to-nearest would leave them unchanged.
#[test]
fn bf16_parameters_round_stochastically() {
    use gdc_runtime::stochastic_bf16;
    // 1.0 + a quarter of a bf16 step (2^-7 at 1.0): rounds up about a quarter of the time.
    let x = 1.0f32 + 0.25 * 2f32.powi(-7);
    let ups = (0..65536u32).filter(|r| stochastic_bf16(x, r.wrapping_mul(2654435761)) == 0x3F81).count();
    assert!((ups as f64 / 65536.0 - 0.25).abs() < 0.01, "{ups} of 65536 rounded up");
    assert_eq!(stochastic_bf16(f32::NAN, 7), 0x7FC0);
    assert_eq!(stochastic_bf16(1.0, 0xFFFF), 0x3F80, "a bf16 value never moves");

    let src = "optimizer tiny { hyper lr = 1e-4  update(p, g) { p = p - lr * g } }";
    let program = Program::compile(src).expect("compiles");
    let specs = [ParamSpec::new("w", &[4096])];
    let run = || {
        let mut opt = Optimizer::with_options(&program, &specs, cpu()).expect("binds");
        let mut w = vec![0x3F80u16; 4096]; // 1.0
        let g = vec![1.0f32; 4096];
        for _ in 0..100 {
            opt.step_bf16(&mut [&mut w[..]], &[&g[..]]).expect("steps");
        }
        w
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "reproducible");
    // 100 steps of 1e-4 from 1.0: 0.99 on average; round-to-nearest would stay at 1.0
    // (each update is a 78th of the gap below 1.0, 2^-8).
    let mean = a.iter().map(|b| f64::from(f32::from_bits(u32::from(*b) << 16))).sum::<f64>() / 4096.0;
    assert!((mean - 0.99).abs() < 5e-4, "mean {mean}");
}
