//! Checkpoints across edits of the optimizer's source (the migration rule of
//! docs/checkpoints.md): a state that keeps its parameter, name and shape keeps its values bit
//! for bit; a new, renamed, reshaped or dropped state, a dropped hyperparameter or global is a
//! typed error naming it, and leaves the optimizer exactly as it was; format-1 files still load
//! into the program that wrote them and only there.

use gdc_runtime::checkpoint::{self, CheckpointError, CheckpointMeta, Globals, Migration, StateTensor};
use gdc_runtime::{Optimizer, ParamSpec, RuntimeError};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The program that saves: AdamW with the first moment's bias correction carried in a
/// global.
const BASE: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  global beta1_pow = 1

  state m = zeros
  state v = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
  }

  update(p, g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
"#;

/// Migrates: other arithmetic (eps inside the root, the decay folded into the last line), a
/// new hyperparameter `lr_scale` and a new global `edits`; states unchanged.
const EDITED: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01
  hyper lr_scale = 0.5 in 0..=1

  global beta1_pow = 1
  global edits = 7

  state m = zeros
  state v = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
    edits = edits + 1
  }

  update(p, g) {
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p * (1 - lr * weight_decay) - lr_scale * lr * m_hat / sqrt(v_hat + eps * eps)
  }
}
"#;

/// `m` renamed to `mom`.
const RENAMED: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  global beta1_pow = 1

  state mom = zeros
  state v = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
  }

  update(p, g) {
    p = p * (1 - lr * weight_decay)
    mom = lerp(mom, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = mom / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
"#;

/// `v` factored to one value per row for matrices (`state v: [rows]`); vectors keep theirs.
const REFACTORED: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  global beta1_pow = 1

  state m = zeros
  state v: [rows] = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
  }

  update(p: [rows, cols], g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, sum(g * g, axis = 1) / cols, 1 - beta2)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }

  update(p: [rows], g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
"#;

/// AMSGrad: a new state `v_max`.
const AMSGRAD: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  global beta1_pow = 1

  state m = zeros
  state v = zeros
  state v_max = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
  }

  update(p, g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    v_max = max(v_max, v)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v_max / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
"#;

/// Vectors step with momentum alone, so their `v` is no longer used.
const VECTORS_WITHOUT_V: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  global beta1_pow = 1

  state m = zeros
  state v = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
  }

  update(p: [rows, cols], g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }

  update(p: [rows], g) {
    m = lerp(m, g, 1 - beta1)
    p = p - lr * m
  }
}
"#;

/// Plain Adam: `weight_decay` dropped.
const NO_DECAY: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8

  global beta1_pow = 1

  state m = zeros
  state v = zeros

  prepare {
    beta1_pow = beta1_pow * beta1
  }

  update(p, g) {
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1_pow)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
"#;

/// The bias correction computed from `step`: the global `beta1_pow` dropped.
const NO_GLOBAL: &str = r#"
optimizer adamw_like {
  hyper lr = 1e-3
  hyper beta1 = 0.9
  hyper beta2 = 0.999
  hyper eps = 1e-8
  hyper weight_decay = 0.01

  state m = zeros
  state v = zeros

  update(p, g) {
    p = p * (1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1)
    v = lerp(v, g * g, 1 - beta2)
    let m_hat = m / (1 - beta1 ^ step)
    let v_hat = v / (1 - beta2 ^ step)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
  }
}
"#;

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "checkpoint-migration-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn specs() -> [ParamSpec; 2] {
    [ParamSpec::new("w", &[2, 3]), ParamSpec::new("b", &[3])]
}

fn grads(seed: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0).collect()
}

/// Parameter values and the optimizer stepping them.
struct Run {
    opt: Optimizer,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Run {
    fn new(source: &str) -> Run {
        let opt = Optimizer::from_source(source, &specs()).expect("compiles and binds");
        Run { opt, w: vec![0.5, -1.0, 2.0, 0.25, 1.5, -0.75], b: vec![0.1, -0.2, 0.3] }
    }

    fn step(&mut self, t: usize) {
        self.opt.step(&mut [&mut self.w, &mut self.b], &[&grads(t, 6), &grads(t + 9, 3)]).expect("steps");
    }
}

/// BASE after three steps with `lr` = 0.05, saved to `dir/base.safetensors`.
fn saved_base(dir: &Path) -> (Run, PathBuf) {
    let mut run = Run::new(BASE);
    run.opt.set_hyper("lr", 0.05).expect("known");
    for t in 0..3 {
        run.step(t);
    }
    let path = dir.join("base.safetensors");
    run.opt.save_checkpoint(&path).expect("saves");
    (run, path)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Every state tensor of a checkpoint: key, shape and bits.
type StateBits = Vec<(String, Vec<usize>, Vec<u32>)>;

/// Everything a checkpoint holds about an optimizer (step, hyperparameters, globals, every
/// state bit for bit), read back through a save of its own.
fn snapshot(opt: &Optimizer, dir: &Path) -> (CheckpointMeta, StateBits) {
    let path = dir.join("snapshot.safetensors");
    opt.save_checkpoint(&path).expect("saves a snapshot");
    let (meta, tensors) = checkpoint::load(&path).expect("loads the snapshot");
    (meta, tensors.iter().map(|t| (t.key(), t.shape.clone(), bits(&t.data))).collect())
}

fn named_globals(meta: &CheckpointMeta) -> &[(String, f64)] {
    match &meta.globals {
        Globals::Named(g) => g,
        Globals::Positional(g) => panic!("a new save has named globals, got positional {g:?}"),
    }
}

/// Loads `path` into a `source` optimizer that has stepped twice on its own, expects a
/// migration error, and checks that the optimizer is exactly as it was.
fn refused(source: &str, path: &Path, dir: &Path) -> (Migration, String) {
    let mut run = Run::new(source);
    run.opt.set_hyper("lr", 0.02).expect("known");
    run.step(40);
    run.step(41);
    let before = snapshot(&run.opt, dir);
    let err = run.opt.load_checkpoint(path).expect_err("the rule refuses it");
    let text = err.to_string();
    let mismatch = match err {
        RuntimeError::Checkpoint(CheckpointError::Migration { saved_optimizer, optimizer, mismatch, path: p }) => {
            assert_eq!((saved_optimizer.as_str(), optimizer.as_str(), p.as_path()), ("adamw_like", "adamw_like", path));
            *mismatch
        }
        other => panic!("expected a Migration error, got {other:?}"),
    };
    assert_eq!(run.opt.step_count(), 2, "{text}");
    assert_eq!(run.opt.hyper("lr"), Some(0.02), "{text}");
    assert_eq!(snapshot(&run.opt, dir), before, "a refused load changes nothing");
    (mismatch, text)
}

#[test]
fn an_edit_that_keeps_states_migrates_them_bit_for_bit() {
    let dir = scratch("edited");
    let (base, path) = saved_base(&dir);
    let (saved_meta, _) = checkpoint::load(&path).expect("loads");
    assert_eq!(saved_meta.format(), "gdc-checkpoint-3");
    let beta1_pow = named_globals(&saved_meta)[0].1;
    assert_eq!(named_globals(&saved_meta)[0].0, "beta1_pow");
    assert!((beta1_pow - 0.729).abs() < 1e-6, "0.9^3, got {beta1_pow}");

    let mut run = Run::new(EDITED);
    assert_ne!(run.opt.program().hash(), base.opt.program().hash());
    run.opt.load_checkpoint(&path).expect("the edit migrates");
    assert_eq!(run.opt.step_count(), 3);
    assert_eq!(run.opt.hyper("lr"), Some(0.05), "saved hyperparameters come back");
    assert_eq!(run.opt.hyper("lr_scale"), Some(0.5), "a new hyperparameter keeps its default");
    for (param, state) in [("w", "m"), ("w", "v"), ("b", "m"), ("b", "v")] {
        let (old, new) = (base.opt.state(param, state).expect("saved"), run.opt.state(param, state).expect("loaded"));
        assert_eq!(bits(&new), bits(&old), "{param}/{state}");
    }
    // The saved global by name, the new one at its initial value.
    let (meta, _) = snapshot(&run.opt, &dir);
    let globals = named_globals(&meta);
    assert_eq!(globals[0].0, "beta1_pow");
    assert_eq!(globals[0].1.to_bits(), beta1_pow.to_bits());
    assert_eq!(globals[1], ("edits".to_string(), 7.0));

    // Stepping continues from the migrated state, with the new arithmetic.
    let (m0, v0) = (run.opt.state("w", "m").expect("m"), run.opt.state("w", "v").expect("v"));
    let w0 = base.w.clone();
    run.w.clone_from(&base.w);
    run.b.clone_from(&base.b);
    run.step(3);
    assert_eq!(run.opt.step_count(), 4);
    let g = grads(3, 6);
    let (lr, b1, b2, eps, wd) = (0.05f64, 0.9f64, 0.999f64, 1e-8f64, 0.01f64);
    let (m1, v1) = (run.opt.state("w", "m").expect("m"), run.opt.state("w", "v").expect("v"));
    for i in 0..6 {
        let (m, v, gi) = (f64::from(m0[i]), f64::from(v0[i]), f64::from(g[i]));
        let m_new = m + (1.0 - b1) * (gi - m);
        let v_new = v + (1.0 - b2) * (gi * gi - v);
        assert!((f64::from(m1[i]) - m_new).abs() < 1e-6, "m[{i}]: {} vs {m_new}", m1[i]);
        assert!((f64::from(v1[i]) - v_new).abs() < 1e-6, "v[{i}]: {} vs {v_new}", v1[i]);
        let m_hat = m_new / (1.0 - beta1_pow * b1);
        let v_hat = v_new / (1.0 - b2.powi(4));
        let p = f64::from(w0[i]) * (1.0 - lr * wd) - 0.5 * lr * m_hat / (v_hat + eps * eps).sqrt();
        assert!((f64::from(run.w[i]) - p).abs() < 1e-5, "w[{i}]: {} vs {p}", run.w[i]);
    }
    let (meta, _) = snapshot(&run.opt, &dir);
    assert_eq!(named_globals(&meta)[1], ("edits".to_string(), 8.0), "the new global steps on from its initial value");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_renamed_state_is_refused_naming_parameter_and_state() {
    let dir = scratch("renamed");
    let (_, path) = saved_base(&dir);
    let (mismatch, text) = refused(RENAMED, &path, &dir);
    assert_eq!(
        mismatch,
        Migration::MissingState { param: "w".into(), state: "mom".into(), saved: vec!["m".into(), "v".into()] }
    );
    assert!(text.contains("parameter `w` uses state `mom`"), "{text}");
    assert!(text.contains("its states for `w`: `m`, `v`"), "{text}");
    assert!(text.contains("keep the old name, or start from step 0"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_state_whose_shape_changed_is_refused_with_both_shapes() {
    let dir = scratch("reshaped");
    let (_, path) = saved_base(&dir);
    let (mismatch, text) = refused(REFACTORED, &path, &dir);
    assert_eq!(
        mismatch,
        Migration::StateShape { param: "w".into(), state: "v".into(), checkpoint: vec![2, 3], program: vec![2] }
    );
    assert!(
        text.contains("state `v` of parameter `w` has shape [2, 3] in the checkpoint but [2] in this program"),
        "{text}"
    );
    assert!(text.contains("keep its old shape"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_extra_state_is_refused() {
    let dir = scratch("extra");
    let (_, path) = saved_base(&dir);
    let (mismatch, text) = refused(AMSGRAD, &path, &dir);
    assert_eq!(
        mismatch,
        Migration::MissingState { param: "w".into(), state: "v_max".into(), saved: vec!["m".into(), "v".into()] }
    );
    assert!(
        text.contains("no state `v_max` for it") && text.contains("a new or renamed state cannot be migrated"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_saved_state_the_program_no_longer_uses_for_a_parameter_is_refused() {
    let dir = scratch("unused");
    let (_, path) = saved_base(&dir);
    let (mismatch, text) = refused(VECTORS_WITHOUT_V, &path, &dir);
    assert_eq!(mismatch, Migration::UnusedState { param: "b".into(), state: "v".into() });
    assert!(text.contains("holds state `v` of parameter `b`, which this program does not use for it"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_dropped_hyperparameter_is_refused_naming_it() {
    let dir = scratch("nohyper");
    let (_, path) = saved_base(&dir);
    let (mismatch, text) = refused(NO_DECAY, &path, &dir);
    assert_eq!(mismatch, Migration::UnknownHyper { name: "weight_decay".into() });
    assert!(text.contains("hyperparameter `weight_decay`, which this program does not declare"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_dropped_global_is_refused_naming_it() {
    let dir = scratch("noglobal");
    let (_, path) = saved_base(&dir);
    let (mismatch, text) = refused(NO_GLOBAL, &path, &dir);
    assert_eq!(mismatch, Migration::UnknownGlobal { name: "beta1_pow".into() });
    assert!(text.contains("global `beta1_pow`, which this program does not declare"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_saved_hyperparameter_outside_the_new_range_is_refused() {
    let dir = scratch("range");
    let (_, path) = saved_base(&dir);
    let narrowed = BASE.replace("hyper lr = 1e-3", "hyper lr = 1e-3 in 0..=0.01");
    let mut run = Run::new(&narrowed);
    let err = run.opt.load_checkpoint(&path).expect_err("lr = 0.05 is out of range");
    assert!(matches!(err, RuntimeError::CheckpointState { .. }), "{err:?}");
    assert!(err.to_string().contains("`lr`"), "{err}");
    assert_eq!((run.opt.step_count(), run.opt.hyper("lr")), (0, Some(1e-3)));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_checkpoint_saved_before_the_first_step_loads_into_a_program_with_new_state() {
    let dir = scratch("step0");
    let path = dir.join("fresh.safetensors");
    let mut base = Run::new(BASE);
    base.opt.set_hyper("beta2", 0.95).expect("known");
    base.opt.save_checkpoint(&path).expect("saves");
    let mut run = Run::new(AMSGRAD);
    run.opt.load_checkpoint(&path).expect("nothing to migrate at step 0");
    assert_eq!((run.opt.step_count(), run.opt.hyper("beta2")), (0, Some(0.95)));
    run.step(0);
    assert_eq!(run.opt.state("w", "v_max").expect("initialised at the first step").len(), 6);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_same_program_round_trips_exactly() {
    let dir = scratch("same");
    let (mut base, path) = saved_base(&dir);
    let bytes = std::fs::read(&path).expect("reads");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
    let md = header.metadata().as_ref().expect("metadata");
    assert_eq!(md["gdc.format"], "gdc-checkpoint-3");
    assert_eq!(md["gdc.program_hash"], base.opt.program().hash());
    let globals: serde_json::Value = serde_json::from_str(&md["gdc.globals"]).expect("JSON");
    assert_eq!(globals[0][0], "beta1_pow", "globals by name: {globals}");
    assert!(globals[0][1].as_str().is_some_and(|v| v.starts_with("0.72")), "{globals}");

    let mut run = Run::new(BASE);
    run.opt.load_checkpoint(&path).expect("loads");
    assert_eq!(snapshot(&run.opt, &dir), snapshot(&base.opt, &dir));
    run.w.clone_from(&base.w);
    run.b.clone_from(&base.b);
    for t in 3..6 {
        base.step(t);
        run.step(t);
    }
    assert_eq!((bits(&run.w), bits(&run.b)), (bits(&base.w), bits(&base.b)), "bit-identical after resuming");
    std::fs::remove_dir_all(&dir).ok();
}

/// Rewrites a format-2 checkpoint as format 1 would have written it: `gdc-checkpoint-1`,
/// globals as a positional list of numbers as text.
fn write_format_1(from: &Path, to: &Path) {
    let (meta, tensors) = checkpoint::load(from).expect("loads");
    let globals: Vec<String> = named_globals(&meta).iter().map(|(_, v)| v.to_string()).collect();
    let hypers: Vec<(String, String)> = meta.hypers.iter().map(|(n, v)| (n.clone(), v.to_string())).collect();
    let md = HashMap::from([
        ("gdc.format".to_string(), "gdc-checkpoint-1".to_string()),
        ("gdc.program_hash".to_string(), meta.program_hash.clone()),
        ("gdc.optimizer".to_string(), meta.optimizer.clone()),
        ("gdc.step".to_string(), meta.step.to_string()),
        ("gdc.params".to_string(), serde_json::to_string(&meta.params).expect("json")),
        ("gdc.hypers".to_string(), serde_json::to_string(&hypers).expect("json")),
        ("gdc.globals".to_string(), serde_json::to_string(&globals).expect("json")),
    ]);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t: &StateTensor| (t.key(), t.shape.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = data.iter().map(|(k, shape, bytes)| {
        (k.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).expect("a float32 view"))
    });
    std::fs::write(to, safetensors::serialize(views, Some(md)).expect("serializes")).expect("writes");
}

#[test]
fn a_format_1_file_loads_into_its_own_program_only() {
    let dir = scratch("format1");
    let (base, path) = saved_base(&dir);
    let old = dir.join("old.safetensors");
    write_format_1(&path, &old);
    let (meta, _) = checkpoint::load(&old).expect("format 1 is still read");
    assert_eq!(meta.format(), "gdc-checkpoint-1");
    assert!(matches!(&meta.globals, Globals::Positional(g) if g.len() == 1));

    let mut same = Run::new(BASE);
    same.opt.load_checkpoint(&old).expect("the program that wrote it");
    assert_eq!(snapshot(&same.opt, &dir), snapshot(&base.opt, &dir), "positional globals and every state restored");

    // Another program, even one the rule would migrate a format-2 file into, is refused.
    let mut edited = Run::new(EDITED);
    edited.step(50);
    let before = snapshot(&edited.opt, &dir);
    let err = edited.opt.load_checkpoint(&old).expect_err("another program");
    match &err {
        RuntimeError::Checkpoint(CheckpointError::ProgramMismatch { saved_hash, hash, .. }) => {
            assert_eq!(saved_hash, base.opt.program().hash());
            assert_eq!(hash, edited.opt.program().hash());
        }
        other => panic!("expected ProgramMismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("written by another program") && text.contains("gdc-checkpoint-1"), "{text}");
    assert_eq!(snapshot(&edited.opt, &dir), before);
    edited.opt.load_checkpoint(&path).expect("the format-2 file migrates");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn save_writes_format_2_only() {
    let dir = scratch("write1");
    let meta = CheckpointMeta {
        program_hash: "h".into(),
        optimizer: "adamw_like".into(),
        params: vec![("w".into(), vec![2])],
        step: 0,
        skipped_steps: 0,
        hypers: vec![],
        globals: Globals::Positional(vec![1.0]),
    };
    let path = dir.join("c.safetensors");
    match checkpoint::save(&path, &meta, &[]) {
        Err(CheckpointError::Metadata { key, .. }) => assert_eq!(key, "gdc.globals"),
        other => panic!("expected a Metadata error, got {other:?}"),
    }
    assert!(!path.exists());
    let named = CheckpointMeta { globals: Globals::Named(vec![("a".into(), 1.0), ("a".into(), 2.0)]), ..meta };
    match checkpoint::save(&path, &named, &[]) {
        Err(CheckpointError::Metadata { key, reason, .. }) => {
            assert_eq!((key.as_str(), reason.as_str()), ("gdc.globals", "global `a` appears twice"))
        }
        other => panic!("expected a Metadata error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The two programs of docs/checkpoints.md's "A change that migrates", in order.
fn documented_example() -> (String, String) {
    let doc = include_str!("../../docs/checkpoints.md");
    let mut blocks = doc.split("```gd\n").skip(1).map(|b| b.split("```").next().expect("a closed block").to_string());
    (blocks.next().expect("the saving program"), blocks.next().expect("the edited program"))
}

#[test]
fn the_documented_example_migrates() {
    let dir = scratch("doc");
    let (saving, edited) = documented_example();
    let mut run = Run::new(&saving);
    run.opt.set_hyper("lr", 0.02).expect("known");
    for t in 0..2 {
        run.step(t);
    }
    let path = dir.join("opt.safetensors");
    run.opt.save_checkpoint(&path).expect("saves");
    let mut loaded = Run::new(&edited);
    loaded.opt.load_checkpoint(&path).expect("the documented edit migrates");
    assert_eq!((loaded.opt.step_count(), loaded.opt.hyper("lr")), (2, Some(0.02)));
    assert_eq!(loaded.opt.hyper("weight_decay"), Some(0.01));
    assert_eq!(bits(&loaded.opt.state("w", "v").expect("v")), bits(&run.opt.state("w", "v").expect("v")));
    let (meta, _) = snapshot(&loaded.opt, &dir);
    assert_eq!(named_globals(&meta), [("updates".to_string(), 0.0)]);
    // And the documented refusal: a factored `v`.
    let factored = edited.replace("state v = zeros", "state v: [rows] = zeros").replace(
        "update(p, g) {",
        "update(p: [rows, cols], g) {\n    m = lerp(m, g, 1 - beta1)\n    v = lerp(v, sum(g * g, axis = 1) / cols, 1 - beta2)\n    p = p - lr * m / (sqrt(v) + eps)\n  }\n\n  update(p: [rows], g) {",
    );
    let mut refused = Run::new(&factored);
    let err = refused.opt.load_checkpoint(&path).expect_err("a factored v");
    assert!(
        err.to_string()
            .contains("state `v` of parameter `w` has shape [2, 3] in the checkpoint but [2] in this program"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
