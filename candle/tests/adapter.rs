//! The adapter against the runtime it wraps: a step through candle's variables gives the same
//! bits as `Optimizer::step` on plain slices, state swaps round-trip, and misuse is refused
//! with typed errors before anything changes.

use candle_core::{DType, Device, Tensor, Var};
use gdc_candle::{Error, GdcOptimizer, NamedVar, Role};
use gdc_runtime::{Optimizer, ParamSpec, Program};

fn program(name: &str) -> Program {
    let path = format!("{}/../examples/optimizers/{name}.gd", env!("CARGO_MANIFEST_DIR"));
    Program::compile_file(path).expect("example compiles")
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// A tiny model: `loss = sum((w x + b)^2)` with `w` [3, 4], `b` [3].
fn model() -> (Var, Var, Tensor) {
    let w = Var::from_vec(values(12, 1), (3, 4), &Device::Cpu).unwrap();
    let b = Var::from_vec(values(3, 2), 3, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(values(8, 3), (4, 2), &Device::Cpu).unwrap();
    (w, b, x)
}

fn loss(w: &Var, b: &Var, x: &Tensor) -> Tensor {
    w.as_tensor()
        .matmul(x)
        .unwrap()
        .broadcast_add(&b.as_tensor().unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
}

fn to_vec(v: &Var) -> Vec<f32> {
    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn steps_match_the_runtime_bit_for_bit() {
    for name in ["adamw", "muon_adamw", "soap", "schedule_free_adamw"] {
        let prog = program(name);
        let (w, b, x) = model();
        let mut opt = GdcOptimizer::new(
            &prog,
            vec![
                NamedVar::new("w", w.clone()).with_role(Role::Hidden),
                NamedVar::new("b", b.clone()).with_role(Role::Bias),
            ],
        )
        .unwrap();
        let specs =
            [ParamSpec::new("w", &[3, 4]).with_role(Role::Hidden), ParamSpec::new("b", &[3]).with_role(Role::Bias)];
        let mut plain = Optimizer::new(&prog, &specs).unwrap();
        let (mut pw, mut pb) = (to_vec(&w), to_vec(&b));
        for step in 0..5 {
            let grads = loss(&w, &b, &x).backward().unwrap();
            let (gw, gb) = (grads.get(w.as_tensor()).unwrap(), grads.get(b.as_tensor()).unwrap());
            let (gw, gb): (Vec<f32>, Vec<f32>) = (gw.flatten_all().unwrap().to_vec1().unwrap(), gb.to_vec1().unwrap());
            // The plain path's gradient is computed at its own parameters, equal so far.
            assert_eq!(pw, to_vec(&w), "{name} step {step}");
            plain.step(&mut [&mut pw, &mut pb], &[&gw, &gb]).unwrap();
            opt.step(&grads).unwrap();
            assert_eq!(pw, to_vec(&w), "{name} step {step}: w");
            assert_eq!(pb, to_vec(&b), "{name} step {step}: b");
        }
        assert_eq!(opt.optimizer().step_count(), 5);
        assert_ne!(to_vec(&w), values(12, 1), "{name} moved w");
    }
}

#[test]
fn swap_state_round_trips_in_place() {
    let (w, b, x) = model();
    let mut opt =
        GdcOptimizer::new(&program("adamw_ema"), vec![NamedVar::new("w", w.clone()), NamedVar::new("b", b.clone())])
            .unwrap();
    for _ in 0..3 {
        opt.backward_step(&loss(&w, &b, &x)).unwrap();
    }
    let before = to_vec(&w);
    let ema = opt.state("w", "ema").unwrap();
    opt.swap_state("ema").unwrap();
    assert_eq!(to_vec(&w), ema);
    opt.swap_state("ema").unwrap();
    assert_eq!(to_vec(&w), before);
}

#[test]
fn misuse_is_refused_before_anything_changes() {
    let (w, b, x) = model();
    let prog = program("adamw");
    let mut opt = GdcOptimizer::new(&prog, vec![NamedVar::new("w", w.clone()), NamedVar::new("b", b.clone())]).unwrap();
    // Gradients of a loss that does not involve `b`.
    let grads = w.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let before = to_vec(&w);
    match opt.step(&grads) {
        Err(Error::MissingGrad(name)) => assert_eq!(name, "b"),
        other => panic!("expected MissingGrad, got {other:?}"),
    }
    assert_eq!(to_vec(&w), before);
    assert_eq!(opt.optimizer().step_count(), 0);

    let half = Var::zeros((2, 2), DType::F16, &Device::Cpu).unwrap();
    assert!(matches!(GdcOptimizer::new(&prog, vec![NamedVar::new("h", half)]), Err(Error::DType { .. })));
    let dup = GdcOptimizer::new(&prog, vec![NamedVar::new("w", w.clone()), NamedVar::new("w", b.clone())]);
    assert!(matches!(dup, Err(Error::Runtime(_))), "duplicate names are refused");
    assert!(matches!(opt.set_hyper("no_such", 1.0), Err(Error::Runtime(_))));
    opt.backward_step(&loss(&w, &b, &x)).unwrap();
    assert_ne!(to_vec(&w), before);
}

#[test]
fn from_varmap_binds_every_variable_in_name_order_with_roles() {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let l1 = candle_nn::linear(4, 8, vb.pp("l1")).unwrap();
    let l2 = candle_nn::linear(8, 2, vb.pp("l2")).unwrap();
    let role = |name: &str, shape: &[usize]| {
        if name.ends_with("bias") {
            Role::Bias
        } else if shape[0] == 8 {
            Role::Hidden
        } else {
            Role::Output
        }
    };
    let mut opt = GdcOptimizer::from_varmap(&program("muon_adamw"), &varmap, role).unwrap();
    opt.set_hyper("muon.lr", 0.02).unwrap();
    opt.set_hyper("adamw.lr", 0.02).unwrap();
    let names: Vec<&str> = opt.vars().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["l1.bias", "l1.weight", "l2.bias", "l2.weight"]);
    assert_eq!(opt.vars()[1].role, Role::Hidden);
    let x = Tensor::from_vec(values(12, 5), (3, 4), &Device::Cpu).unwrap();
    use candle_core::Module;
    let out = l2.forward(&l1.forward(&x).unwrap().tanh().unwrap()).unwrap();
    let l0 = out.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..20 {
        let out = l2.forward(&l1.forward(&x).unwrap().tanh().unwrap()).unwrap();
        opt.backward_step(&out.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let out = l2.forward(&l1.forward(&x).unwrap().tanh().unwrap()).unwrap();
    let l20 = out.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(l20 < 0.5 * l0, "the loss falls: {l0} -> {l20}");
}

#[test]
fn from_varmap_mup_takes_base_shapes_from_the_base_model() {
    let build = |width: usize| {
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        candle_nn::linear(4, width, vb.pp("l1")).unwrap();
        candle_nn::linear(width, 2, vb.pp("l2")).unwrap();
        varmap
    };
    let (wide, base) = (build(16), build(4));
    let role = |name: &str, _: &[usize]| if name.ends_with("bias") { Role::Bias } else { Role::Hidden };
    let opt = GdcOptimizer::from_varmap_mup(&program("adamw_mup"), &wide, &base, role).unwrap();
    let l1 = opt.vars().iter().find(|v| v.name == "l1.weight").unwrap();
    assert_eq!(l1.var.dims(), [16, 4]);
    assert_eq!(l1.base_shape.as_deref(), Some(&[4usize, 4][..]));

    let other = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
    candle_nn::linear(4, 4, vb.pp("l1")).unwrap();
    match GdcOptimizer::from_varmap_mup(&program("adamw_mup"), &wide, &other, role) {
        Err(Error::MissingBase(name)) => assert_eq!(name, "l2.bias"),
        other => panic!("expected MissingBase, got {:?}", other.err()),
    }
}

#[test]
fn options_pick_threads_and_refuse_cuda() {
    use gdc_runtime::{Backend, Options};
    let (w, b, x) = model();
    let vars = vec![NamedVar::new("w", w.clone()), NamedVar::new("b", b.clone())];
    let one = Options { backend: Backend::Cpu, threads: Some(1) };
    let mut single = GdcOptimizer::with_options(&program("adamw"), vars.clone(), one).unwrap();
    let (w2, b2, _) = model();
    let mut pool =
        GdcOptimizer::new(&program("adamw"), vec![NamedVar::new("w", w2.clone()), NamedVar::new("b", b2.clone())])
            .unwrap();
    for _ in 0..3 {
        single.backward_step(&loss(&w, &b, &x)).unwrap();
        pool.backward_step(&loss(&w2, &b2, &x)).unwrap();
    }
    assert_eq!(to_vec(&w), to_vec(&w2), "one thread and a pool give the same bits");
    let cuda = Options { backend: Backend::Cuda, threads: None };
    assert!(matches!(GdcOptimizer::with_options(&program("adamw"), vars, cuda), Err(Error::Device { .. })));
}

/// K-FAC through the adapter: the training code hands over a bias-free layer's input and the
/// gradient at its output (from the same `backward`), and the step is the runtime's, bit for
/// bit; a missing statistic is refused before anything changes.
#[test]
fn kfac_takes_its_statistics_from_the_training_code() {
    let program = program("kfac");
    let w = Var::from_vec(values(12, 1), (3, 4), &Device::Cpu).unwrap();
    let mut opt = GdcOptimizer::new(&program, vec![NamedVar::new("w", w.clone())]).expect("binds");
    let mut reference = Optimizer::new(&program, &[ParamSpec::new("w", &[3, 4])]).expect("binds");
    let mut plain = to_vec(&w);
    for t in 0..4u32 {
        let x = Tensor::from_vec(values(20, 10 + t), (5, 4), &Device::Cpu).unwrap();
        // candle keeps only variables' gradients: a zero variable added to the layer's
        // output has the output's gradient.
        let probe = Var::zeros((5, 3), DType::F32, &Device::Cpu).unwrap();
        let y = (x.matmul(&w.as_tensor().t().unwrap()).unwrap() + probe.as_tensor()).unwrap();
        let loss = (y.sqr().unwrap().sum_all().unwrap() / 5.0).unwrap();
        let grads = loss.backward().unwrap();
        let s = grads.get(probe.as_tensor()).expect("the gradient at the layer's output").clone();
        if t == 0 {
            let e = opt.step(&grads).expect_err("K-FAC's first step reads a and s");
            assert!(e.to_string().contains("reads input `a` of parameter `w`"), "{e}");
            assert_eq!(to_vec(&w), plain, "nothing changed");
        }
        let g: Vec<f32> = grads.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let (a, sv): (Vec<f32>, Vec<f32>) =
            (x.flatten_all().unwrap().to_vec1().unwrap(), s.flatten_all().unwrap().to_vec1().unwrap());
        let mut inputs = gdc_runtime::Inputs::new();
        inputs.add("w", "a", &[5, 4], &a).add("w", "s", &[5, 3], &sv);
        reference.step_with_inputs(&mut [&mut plain], &[&g], &inputs).expect("runtime");
        opt.step_with_inputs(&grads, &[("w", "a", &x), ("w", "s", &s)]).expect("adapter");
        assert_eq!(to_vec(&w), plain, "step {}: the adapter's step is the runtime's", t + 1);
    }
    let x64 = Tensor::zeros((5, 4), DType::F64, &Device::Cpu).unwrap();
    let grads = w.as_tensor().sum_all().unwrap().backward().unwrap();
    let e = opt.step_with_inputs(&grads, &[("w", "a", &x64)]).expect_err("float64 input");
    assert!(matches!(e, Error::DType { .. }), "{e}");
}
