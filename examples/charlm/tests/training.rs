//! Training on text from this repository (its docs, read at test time, so the test never
//! depends on the machine's licence texts): a tiny model's training loss falls well below
//! chance with each of the four compared optimizers, and schedule-free validation at x leaves
//! the variables holding y.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use charlm::data::{read_text, sample_batch, Corpus};
use charlm::eval::{mean_loss, validation_loss};
use charlm::model::{self, Model};
use charlm::train::{train, TrainConfig};
use gdc_candle::{GdcOptimizer, Role};
use gdc_runtime::Program;
use gdc_train_kit::Rng;
use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn corpus() -> Corpus {
    let (text, files) = read_text(&repo("docs")).expect("the repository's docs are readable");
    assert!(files.len() >= 2, "{files:?}");
    Corpus::new(&text, 0.1)
}

fn program(name: &str) -> Program {
    Program::compile_file(repo(&format!("examples/optimizers/{name}.gd"))).expect("the example compiles")
}

fn tiny(vocab: usize) -> model::Config {
    model::Config { vocab, d_model: 32, heads: 2, layers: 1, ctx: 32 }
}

#[test]
fn each_optimizer_brings_the_training_loss_well_below_chance() {
    let corpus = corpus();
    let chance = (corpus.vocab.len() as f64).ln();
    let cases: [(&str, &[(&str, f64)]); 4] = [
        ("adamw", &[("lr", 1e-2)]),
        ("muon_adamw", &[("muon.lr", 0.05), ("adamw.lr", 1e-2)]),
        ("soap", &[("lr", 1e-2)]),
        ("schedule_free_adamw", &[("lr", 1e-2)]),
    ];
    for (name, sets) in cases {
        let cfg = TrainConfig {
            model: tiny(corpus.vocab.len()),
            steps: 40,
            time_budget: None,
            batch: 8,
            warmup: 4,
            eval_every: 40,
            seed: 1,
            sets: sets.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let log = train(&program(name), name, &corpus, &cfg, None).expect("training runs");
        assert_eq!(log.steps(), 40, "{name}");
        assert!(!log.diverged, "{name} diverged");
        let first = log.train_losses[..3].iter().map(|&l| l as f64).sum::<f64>() / 3.0;
        let last = log.train_losses[35..].iter().map(|&l| l as f64).sum::<f64>() / 5.0;
        assert!((first - chance).abs() < 0.3, "{name}: starts at {first:.3}, chance is {chance:.3}");
        assert!(last < 0.8 * chance, "{name}: the training loss ends at {last:.3}, chance is {chance:.3}");
        let val = log.final_val();
        eprintln!("{name}: training loss {first:.3} -> {last:.3}, validation {val:.3}, chance {chance:.3}");
        assert!(val < 0.85 * chance, "{name}: the validation loss ends at {val:.3}, chance is {chance:.3}");
    }
}

#[test]
fn schedule_free_is_evaluated_at_x_and_training_resumes_at_y() {
    let corpus = corpus();
    let cfg = tiny(corpus.vocab.len());
    let varmap = VarMap::new();
    let model = Model::new(cfg, &varmap).unwrap();
    model::init(&varmap, cfg.layers, 3).unwrap();
    let mut opt = GdcOptimizer::from_varmap(&program("schedule_free_adamw"), &varmap, model::role_of).unwrap();
    opt.set_hyper("lr", 1e-2).unwrap();
    let mut rng = Rng::new(5);
    for _ in 0..5 {
        let (x, y) = sample_batch(&corpus.train, &mut rng, 4, cfg.ctx);
        let x = Tensor::from_vec(x, (4, cfg.ctx), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(y, (4, cfg.ctx), &Device::Cpu).unwrap();
        opt.backward_step(&model.loss(&x, &y).unwrap()).unwrap();
    }
    let snapshot = |o: &GdcOptimizer| -> Vec<Vec<f32>> {
        o.vars().iter().map(|v| v.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect()
    };
    let before = snapshot(&opt);
    let val = &corpus.val[..600];
    let at_y = mean_loss(&model, val, 16).unwrap();
    let at_x = validation_loss(&model, &opt, val, 16, Some(0.9)).unwrap();
    assert_eq!(snapshot(&opt), before, "y is restored after evaluating at x");
    assert!(at_x.is_finite() && (at_x - at_y).abs() > 1e-6, "x and y differ: {at_x} vs {at_y}");
    // x by hand for one variable: (y - (1 - beta1) z) / beta1.
    let name = "head.weight";
    let z = opt.state(name, "z").unwrap();
    let y = &before[opt.vars().iter().position(|v| v.name == name).unwrap()];
    let x: Vec<f32> = y.iter().zip(&z).map(|(y, z)| (y - 0.1 * z) / 0.9).collect();
    assert!(x.iter().zip(y).any(|(a, b)| (a - b).abs() > 1e-7));
}

#[test]
fn roles_follow_the_variable_names() {
    let varmap = VarMap::new();
    Model::new(tiny(20), &varmap).unwrap();
    let data = varmap.data().lock().unwrap();
    let role = |n: &str| model::role_of(n, data[n].dims());
    assert_eq!(role("tok.weight"), Role::Embedding);
    assert_eq!(role("pos.weight"), Role::Embedding);
    assert_eq!(role("head.weight"), Role::Output);
    assert_eq!(role("blocks.0.attn.q.weight"), Role::Hidden);
    assert_eq!(role("blocks.0.mlp.proj.weight"), Role::Hidden);
    assert_eq!(role("blocks.0.ln1.weight"), Role::Norm);
    assert_eq!(role("ln_f.bias"), Role::Norm);
    assert_eq!(role("blocks.0.mlp.fc.bias"), Role::Bias);
    assert_eq!(data.len(), 3 + 2 + 2 * 2 + 6 * 2, "{:?}", data.keys().collect::<Vec<_>>());
}
