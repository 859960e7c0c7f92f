//! Checkpoint files: bit-exact round trips, parameters matched by name, typed errors (never a
//! panic) for damaged or foreign files, atomic saves that leave no temporary files (and
//! remove those a killed save left), and integrity: every flipped byte of a format-3 file is
//! `Corrupt` and every cut is `Truncated`, with the loading optimizer untouched.

use gdc_runtime::checkpoint::{self, CheckpointError, CheckpointMeta, Globals, ParamMismatch, StateTensor};
use gdc_runtime::{Optimizer, ParamSpec, RuntimeError};
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "checkpoint-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn params() -> Vec<(String, Vec<usize>)> {
    vec![("layer1/w".into(), vec![2, 3]), ("layer1/b".into(), vec![3]), ("scale".into(), vec![])]
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        program_hash: "3f9a0c1d".into(),
        optimizer: "adamw".into(),
        params: params(),
        step: 1234,
        skipped_steps: 7,
        hypers: vec![("lr".into(), 1e-3), ("beta2".into(), 0.999), ("eps".into(), 1e-8), ("nesterov".into(), 1.0)],
        globals: Globals::Named(vec![
            ("mu".into(), 0.1 + 0.2),
            ("zero".into(), -0.0),
            ("big".into(), f64::INFINITY),
            ("third".into(), 1.0 / 3.0),
        ]),
    }
}

fn tensors() -> Vec<StateTensor> {
    let t = |param: &str, state: &str, shape: &[usize], data: Vec<f32>| StateTensor {
        param: param.into(),
        state: state.into(),
        shape: shape.to_vec(),
        data,
    };
    vec![
        t("layer1/w", "m", &[2, 3], vec![0.1, -0.2, 1e-30, -0.0, f32::MAX, f32::MIN_POSITIVE]),
        t("layer1/w", "v", &[2, 3], vec![1.0 / 3.0, 2.5e-7, 7.0, 8.0, 9.0, f32::from_bits(0x7fc0_1234)]),
        t("layer1/b", "m", &[3], vec![1.5, -2.5, f32::INFINITY]),
        t("scale", "m", &[], vec![42.0]),
        // Factored state need not have the parameter's shape.
        t("layer1/w", "row", &[2], vec![3.0, 4.0]),
    ]
}

fn bits(ts: &[StateTensor]) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let mut v: Vec<_> =
        ts.iter().map(|t| (t.key(), t.shape.clone(), t.data.iter().map(|x| x.to_bits()).collect())).collect();
    v.sort();
    v
}

fn saved(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let path = dir.join("opt.safetensors");
    checkpoint::save(&path, &meta(), &tensors()).expect("saves");
    (dir, path)
}

/// A raw safetensors file from header JSON and data bytes.
fn raw_file(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("writes");
}

fn gdc_metadata() -> HashMap<String, String> {
    HashMap::from([
        ("gdc.format".to_string(), "gdc-checkpoint-1".to_string()),
        ("gdc.program_hash".to_string(), "h".to_string()),
        ("gdc.optimizer".to_string(), "adamw".to_string()),
        ("gdc.step".to_string(), "3".to_string()),
        ("gdc.params".to_string(), r#"[["w",[2]]]"#.to_string()),
        ("gdc.hypers".to_string(), "[]".to_string()),
        ("gdc.globals".to_string(), "[]".to_string()),
    ])
}

#[test]
fn a_round_trip_is_bit_exact() {
    let (dir, path) = saved("roundtrip");
    let (m, ts) = checkpoint::load(&path).expect("loads");
    assert_eq!(m, meta());
    let Globals::Named(globals) = &m.globals else { panic!("format 2 names its globals: {:?}", m.globals) };
    assert_eq!(globals[0].1.to_bits(), (0.1f64 + 0.2).to_bits());
    assert_eq!(globals[1].1.to_bits(), (-0.0f64).to_bits(), "the sign of zero survives");
    assert_eq!(bits(&ts), bits(&tensors()));
    assert_eq!(ts.iter().find(|t| t.key() == "layer1/w/v").expect("v").data[5].to_bits(), 0x7fc0_1234);
    // Ordered by the parameter's place, then state name.
    let keys: Vec<String> = ts.iter().map(StateTensor::key).collect();
    assert_eq!(keys, ["layer1/w/m", "layer1/w/row", "layer1/w/v", "layer1/b/m", "scale/m"]);
    assert_eq!(entries(&dir), ["opt.safetensors"]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_file_is_plain_safetensors_with_gdc_metadata() {
    let (dir, path) = saved("plain");
    let bytes = std::fs::read(&path).expect("reads");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
    let md = header.metadata().as_ref().expect("metadata");
    assert_eq!(md["gdc.format"], "gdc-checkpoint-3");
    assert_eq!(md["gdc.file_length"], format!("{:020}", bytes.len()));
    // The checksum: SHA-256 of the file with its own 64 digits read as zeros.
    let digits = md["gdc.checksum"].strip_prefix("sha256:").expect("sha256:");
    let at = bytes.windows(64).position(|w| w == digits.as_bytes()).expect("the digits are in the file");
    let mut zeroed = bytes.clone();
    zeroed[at..at + 64].fill(b'0');
    let sum: String = Sha256::digest(&zeroed).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digits, sum);
    assert_eq!(
        md["gdc.globals"],
        r#"[["mu","0.30000000000000004"],["zero","-0"],["big","inf"],["third","0.3333333333333333"]]"#
    );
    assert_eq!(md["gdc.program_hash"], "3f9a0c1d");
    assert_eq!(md["gdc.step"], "1234");
    assert_eq!(md["gdc.params"], r#"[["layer1/w",[2,3]],["layer1/b",[3]],["scale",[]]]"#);
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let b = st.tensor("layer1/b/m").expect("keyed param/state");
    assert_eq!(b.dtype(), Dtype::F32);
    assert_eq!(b.shape(), [3]);
    assert_eq!(&b.data()[..4], 1.5f32.to_le_bytes());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn parameters_in_another_order_are_compatible() {
    let mut reordered = params();
    reordered.reverse();
    checkpoint::check_compatible(&meta(), "3f9a0c1d", "adamw", &reordered).expect("same set");
    checkpoint::check_compatible(&meta(), "3f9a0c1d", "adamw", &params()).expect("same list");
}

#[test]
fn another_program_is_refused_naming_both_optimizers() {
    let err = checkpoint::check_compatible(&meta(), "77aa", "lion", &params()).expect_err("other hash");
    match &err {
        CheckpointError::ProgramMismatch { saved_optimizer, saved_hash, optimizer, hash } => {
            assert_eq!((saved_optimizer.as_str(), saved_hash.as_str()), ("adamw", "3f9a0c1d"));
            assert_eq!((optimizer.as_str(), hash.as_str()), ("lion", "77aa"));
        }
        other => panic!("expected ProgramMismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("written by another program") && text.contains("`adamw`") && text.contains("`lion`"),
        "{text}"
    );
}

fn param_mismatch(model: &[(String, Vec<usize>)]) -> (String, ParamMismatch, String) {
    match checkpoint::check_compatible(&meta(), "3f9a0c1d", "adamw", model) {
        Err(e @ CheckpointError::ParamMismatch { .. }) => {
            let text = e.to_string();
            let CheckpointError::ParamMismatch { param, mismatch } = e else { unreachable!() };
            (param, mismatch, text)
        }
        other => panic!("expected ParamMismatch, got {other:?}"),
    }
}

#[test]
fn a_missing_parameter_is_named() {
    let mut model = params();
    model.push(("head/w".into(), vec![3, 1]));
    let (param, mismatch, text) = param_mismatch(&model);
    assert_eq!((param.as_str(), mismatch), ("head/w", ParamMismatch::NotInCheckpoint));
    assert!(text.contains("`head/w` is in the model but not in the checkpoint"), "{text}");
}

#[test]
fn an_extra_parameter_is_named() {
    let model: Vec<_> = params().into_iter().filter(|(n, _)| n != "layer1/b").collect();
    let (param, mismatch, text) = param_mismatch(&model);
    assert_eq!((param.as_str(), mismatch), ("layer1/b", ParamMismatch::NotInModel));
    assert!(text.contains("`layer1/b` is in the checkpoint but not in the model"), "{text}");
}

#[test]
fn a_reshaped_parameter_is_named_with_both_shapes() {
    let mut model = params();
    model[0].1 = vec![3, 2];
    let (param, mismatch, text) = param_mismatch(&model);
    assert_eq!(param, "layer1/w");
    assert_eq!(mismatch, ParamMismatch::Shape { checkpoint: vec![2, 3], model: vec![3, 2] });
    assert!(text.contains("[2, 3] in the checkpoint but [3, 2] in the model"), "{text}");
}

/// Where the header's JSON ends (before the padding spaces) and the header's length.
fn json_end_and_header_len(bytes: &[u8]) -> (usize, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let json = std::str::from_utf8(&bytes[8..8 + n]).expect("utf-8");
    (8 + json.trim_end_matches(' ').len(), n)
}

#[test]
fn a_truncated_file_is_truncated_at_every_length() {
    let (dir, path) = saved("truncated");
    let bytes = std::fs::read(&path).expect("reads");
    let n = bytes.len();
    let (json_end, header_len) = json_end_and_header_len(&bytes);
    let cut = dir.join("cut.safetensors");
    for len in 0..n {
        std::fs::write(&cut, &bytes[..len]).expect("writes");
        // Cut in the length field: it needs 8 bytes; in the JSON: the header's end; after
        // it, the header gives the whole length.
        let want = if len < 8 {
            8
        } else if len < json_end {
            8 + header_len
        } else {
            n
        };
        match checkpoint::load(&cut) {
            Err(e @ CheckpointError::Truncated { .. }) => {
                let CheckpointError::Truncated { expected, found, .. } = e else { unreachable!() };
                assert_eq!((expected, found), (want as u64, len as u64), "length {len} of {n}");
                if len == n - 10 {
                    let text = e.to_string();
                    assert!(
                        text.contains(&format!("the file is {len} bytes but its header needs {n}"))
                            && text.contains("load the previous checkpoint"),
                        "{text}"
                    );
                }
            }
            other => panic!("length {len} of {n}: expected Truncated, got {other:?}"),
        }
    }
    // One byte too many is not a cut: the file changed.
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&cut, &longer).expect("writes");
    match checkpoint::load(&cut) {
        Err(CheckpointError::Corrupt { reason, .. }) => assert!(reason.contains("1 bytes past the end"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn every_flipped_byte_is_corrupt_not_a_panic() {
    let (dir, path) = saved("flipped");
    let bytes = std::fs::read(&path).expect("reads");
    let bad = dir.join("bad.safetensors");
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x20, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            std::fs::write(&bad, &b).expect("writes");
            let result = std::panic::catch_unwind(|| checkpoint::load(&bad));
            match result.unwrap_or_else(|_| panic!("load panicked with byte {i} ^ {mask:#x}")) {
                Err(e @ CheckpointError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("is corrupt") && e.to_string().contains("previous checkpoint"))
                }
                other => panic!("byte {i} of {} ^ {mask:#x}: expected Corrupt, got {other:?}", bytes.len()),
            }
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_missing_file_is_an_io_error_with_its_path() {
    let dir = scratch("missing");
    let path = dir.join("nope.safetensors");
    let err = checkpoint::load(&path).expect_err("missing");
    match &err {
        CheckpointError::Io { path: p, source, .. } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_safetensors_file_that_is_not_a_checkpoint_is_refused() {
    let dir = scratch("foreign");
    let path = dir.join("model.safetensors");
    let data = [0u8; 8];
    let view = TensorView::new(Dtype::F32, vec![2], &data).expect("view");
    std::fs::write(&path, safetensors::serialize([("w", view.clone())], None).expect("ser")).expect("writes");
    match checkpoint::load(&path) {
        Err(e @ CheckpointError::NotCheckpoint { found: None, .. }) => {
            assert!(e.to_string().contains("not a gdc checkpoint"), "{e}")
        }
        other => panic!("expected NotCheckpoint, got {other:?}"),
    }
    let md = HashMap::from([("gdc.format".to_string(), "gdc-checkpoint-9".to_string())]);
    std::fs::write(&path, safetensors::serialize([("w", view)], Some(md)).expect("ser")).expect("writes");
    match checkpoint::load(&path) {
        Err(CheckpointError::NotCheckpoint { found: Some(f), .. }) => assert_eq!(f, "gdc-checkpoint-9"),
        other => panic!("expected NotCheckpoint, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn malformed_metadata_names_the_key() {
    let dir = scratch("metadata");
    let path = dir.join("c.safetensors");
    let data = [0u8; 8];
    let cases = [
        ("gdc.step", Some("minus one"), "gdc.step"),
        ("gdc.params", Some("[[\"w\", 2]]"), "gdc.params"),
        ("gdc.params", Some("not json"), "gdc.params"),
        ("gdc.params", Some(r#"[["w",[2]],["w",[2]]]"#), "gdc.params"),
        ("gdc.hypers", Some(r#"[["lr", 0.1]]"#), "gdc.hypers"),
        ("gdc.globals", Some(r#"["x"]"#), "gdc.globals"),
        ("gdc.program_hash", None, "gdc.program_hash"),
    ];
    for (key, value, expected) in cases {
        let mut md = gdc_metadata();
        match value {
            Some(v) => md.insert(key.to_string(), v.to_string()),
            None => md.remove(key),
        };
        let view = TensorView::new(Dtype::F32, vec![2], &data).expect("view");
        std::fs::write(&path, safetensors::serialize([("w/m", view)], Some(md)).expect("ser")).expect("writes");
        match checkpoint::load(&path) {
            Err(CheckpointError::Metadata { key: k, .. }) => assert_eq!(k, expected, "{key} = {value:?}"),
            other => panic!("{key} = {value:?}: expected Metadata, got {other:?}"),
        }
    }
    // The unmodified metadata loads.
    let view = TensorView::new(Dtype::F32, vec![2], &data).expect("view");
    std::fs::write(&path, safetensors::serialize([("w/m", view)], Some(gdc_metadata())).expect("ser")).expect("writes");
    let (m, ts) = checkpoint::load(&path).expect("loads");
    assert_eq!((m.step, m.params, ts[0].data.clone()), (3, vec![("w".to_string(), vec![2])], vec![0.0, 0.0]));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_tensors_are_typed_errors() {
    let dir = scratch("tensors");
    let path = dir.join("c.safetensors");
    let data = [0u8; 16];

    let f32v = TensorView::new(Dtype::F32, vec![2], &data[..8]).expect("view");
    std::fs::write(&path, safetensors::serialize([("wm", f32v.clone())], Some(gdc_metadata())).expect("ser"))
        .expect("writes");
    assert!(matches!(checkpoint::load(&path), Err(CheckpointError::TensorKey { key, .. }) if key == "wm"));
    std::fs::write(&path, safetensors::serialize([("w/", f32v.clone())], Some(gdc_metadata())).expect("ser"))
        .expect("writes");
    assert!(matches!(checkpoint::load(&path), Err(CheckpointError::TensorKey { key, .. }) if key == "w/"));
    std::fs::write(&path, safetensors::serialize([("u/m", f32v)], Some(gdc_metadata())).expect("ser")).expect("writes");
    assert!(matches!(checkpoint::load(&path), Err(CheckpointError::UnknownParam { param, .. }) if param == "u"));

    let f64v = TensorView::new(Dtype::F64, vec![2], &data).expect("view");
    std::fs::write(&path, safetensors::serialize([("w/m", f64v)], Some(gdc_metadata())).expect("ser")).expect("writes");
    match checkpoint::load(&path) {
        Err(e @ CheckpointError::Dtype { .. }) => assert!(e.to_string().contains("F64"), "{e}"),
        other => panic!("expected Dtype, got {other:?}"),
    }

    // Shape [3] (12 bytes) over 8 bytes of data.
    let md = serde_json::to_string(&gdc_metadata()).expect("json");
    let header = format!(r#"{{"__metadata__":{md},"w/m":{{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}}}"#);
    raw_file(&path, &header, &data[..8]);
    match checkpoint::load(&path) {
        Err(e @ CheckpointError::TensorSize { .. }) => {
            let CheckpointError::TensorSize { ref key, ref shape, found, .. } = e else { unreachable!() };
            assert_eq!((key.as_str(), shape.as_slice(), found), ("w/m", &[3][..], 8));
            assert!(e.to_string().contains("shape [3] (3 values) but holds 8 bytes"), "{e}");
        }
        other => panic!("expected TensorSize, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn save_refuses_inconsistent_tensors_and_writes_nothing() {
    let dir = scratch("inconsistent");
    let path = dir.join("c.safetensors");
    let mut ts = tensors();
    ts[2].data.pop();
    assert!(
        matches!(checkpoint::save(&path, &meta(), &ts), Err(CheckpointError::TensorSize { key, .. }) if key == "layer1/b/m")
    );
    let mut ts = tensors();
    ts.push(ts[0].clone());
    assert!(matches!(checkpoint::save(&path, &meta(), &ts), Err(CheckpointError::DuplicateTensor { .. })));
    let mut ts = tensors();
    ts[0].state = "a/b".into();
    assert!(matches!(checkpoint::save(&path, &meta(), &ts), Err(CheckpointError::TensorKey { .. })));
    let mut ts = tensors();
    ts[0].param = "gone".into();
    assert!(matches!(checkpoint::save(&path, &meta(), &ts), Err(CheckpointError::UnknownParam { .. })));
    assert!(entries(&dir).is_empty());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn saving_over_a_checkpoint_replaces_it_and_leaves_no_temporary_files() {
    let (dir, path) = saved("overwrite");
    for step in [1235, 1236, 1237] {
        let mut m = meta();
        m.step = step;
        let mut ts = tensors();
        ts[0].data[0] = step as f32;
        checkpoint::save(&path, &m, &ts).expect("saves over");
        let (back, back_ts) = checkpoint::load(&path).expect("loads");
        assert_eq!(back.step, step);
        assert_eq!(back_ts[0].data[0], step as f32);
    }
    assert_eq!(entries(&dir), ["opt.safetensors"]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_save_into_a_missing_directory_is_an_io_error_and_touches_nothing_else() {
    let (dir, good) = saved("nodir");
    let before = std::fs::read(&good).expect("reads");
    let target = dir.join("no").join("such").join("opt.safetensors");
    let mut m = meta();
    m.step = 9;
    match checkpoint::save(&target, &m, &tensors()) {
        Err(CheckpointError::Io { path, .. }) => assert_eq!(path, target),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(std::fs::read(&good).expect("reads"), before);
    assert_eq!(entries(&dir), ["opt.safetensors"]);
    assert_eq!(checkpoint::load(&good).expect("loads").0.step, 1234);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint() {
    let (dir, path) = saved("keep");
    let before = std::fs::read(&path).expect("reads");
    let mut ts = tensors();
    ts[1].shape = vec![7];
    assert!(checkpoint::save(&path, &meta(), &ts).is_err());
    assert_eq!(std::fs::read(&path).expect("reads"), before);
    // A directory in the way of the rename: the write succeeds, the rename fails, the
    // temporary file is removed.
    let blocked = dir.join("blocked");
    std::fs::create_dir(&blocked).expect("mkdir");
    std::fs::write(blocked.join("x"), b"keep the directory non-empty").expect("writes");
    assert!(matches!(checkpoint::save(&blocked, &meta(), &tensors()), Err(CheckpointError::Io { .. })));
    assert_eq!(entries(&dir), ["blocked", "opt.safetensors"]);
    std::fs::remove_dir_all(dir).ok();
}

const ADAMW: &str = include_str!("../../examples/optimizers/adamw.gd");

/// An AdamW optimizer on a matrix and a vector after `steps` steps with gradients seeded by
/// `seed`.
fn stepped(steps: usize, seed: f32) -> Optimizer {
    let specs = [ParamSpec::new("w", &[6, 10]), ParamSpec::new("b", &[10])];
    let mut opt = Optimizer::from_source(ADAMW, &specs).expect("binds");
    let mut w: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut b = vec![0.5f32; 10];
    for t in 0..steps {
        let gw: Vec<f32> = (0..60).map(|i| ((i + t) as f32 * seed).cos()).collect();
        let gb: Vec<f32> = (0..10).map(|i| (i as f32 - t as f32) * seed).collect();
        opt.step(&mut [&mut w, &mut b], &[&gw, &gb]).expect("steps");
    }
    opt
}

/// Everything a load could change, as bits: the step, hyperparameters, every state.
type Snapshot = (u64, Vec<(String, u64)>, Vec<Vec<u32>>);

fn snapshot(opt: &Optimizer) -> Snapshot {
    let hypers = opt.hypers().into_iter().map(|(n, _, v)| (n, v.to_bits())).collect();
    let states = ["w", "b"]
        .iter()
        .flat_map(|p| ["m", "v"].map(|s| opt.state(p, s).unwrap_or_default()))
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect();
    (opt.step_count(), hypers, states)
}

/// The loading optimizer's result, with a check that a failed load left it as it was.
fn load_into(opt: &mut Optimizer, before: &Snapshot, path: &Path) -> CheckpointError {
    let err = match opt.load_checkpoint(path) {
        Err(RuntimeError::Checkpoint(e)) => e,
        other => panic!("expected a checkpoint error, got {other:?}"),
    };
    assert_eq!(&snapshot(opt), before, "a refused load changes nothing ({err})");
    err
}

#[test]
fn an_optimizer_refuses_every_flip_and_cut_of_its_checkpoint_and_keeps_its_state() {
    let dir = scratch("optimizer-integrity");
    let path = dir.join("opt.safetensors");
    let saved = stepped(3, 0.3);
    saved.save_checkpoint(&path).expect("saves");
    let bytes = std::fs::read(&path).expect("reads");
    let (json_end, header_len) = json_end_and_header_len(&bytes);
    let text = std::str::from_utf8(&bytes[8..json_end]).expect("utf-8");
    let at = |needle: &str| 8 + text.find(needle).unwrap_or_else(|| panic!("{needle} in the header"));

    // The loading optimizer has other state: a refused load must leave it exactly so.
    let mut opt = stepped(5, 0.7);
    opt.set_hyper("lr", 0.125).expect("known");
    let before = snapshot(&opt);

    // Every class of byte: the header's length field, the JSON's structure, metadata keys and
    // values (the step, a hyperparameter, the length, the checksum itself), a tensor's
    // description, the padding, and tensor data.
    let step_value = at("\"gdc.step\":\"") + "\"gdc.step\":\"".len();
    let classes: Vec<(&str, Vec<usize>)> = vec![
        ("header length field", (0..8).collect()),
        ("JSON structure", vec![8, at("\"__metadata__\""), json_end - 1]),
        ("metadata key", (at("\"gdc.format\"")..at("\"gdc.format\"") + 12).collect()),
        ("metadata value: step", vec![step_value]),
        ("metadata value: hypers", (at("[[\\\"lr\\\"")..at("[[\\\"lr\\\"") + 20).collect()),
        (
            "metadata value: file length",
            (at("\"gdc.file_length\":\"") + 19..at("\"gdc.file_length\":\"") + 39).collect(),
        ),
        ("metadata value: checksum", (at("\"gdc.checksum\":\"") + 23..at("\"gdc.checksum\":\"") + 87).collect()),
        ("tensor description", (at("\"w/m\"")..at("\"w/m\"") + 60).collect()),
        ("header padding", (json_end..8 + header_len).collect()),
        ("tensor data", (8 + header_len..bytes.len()).collect()),
    ];
    let bad = dir.join("bad.safetensors");
    let mut refused = 0;
    for (class, positions) in &classes {
        for &i in positions {
            for mask in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                std::fs::write(&bad, &b).expect("writes");
                match load_into(&mut opt, &before, &bad) {
                    CheckpointError::Corrupt { path, .. } => assert_eq!(path, bad),
                    other => panic!("{class}, byte {i} ^ {mask:#x}: expected Corrupt, got {other:?}"),
                }
                refused += 1;
            }
        }
    }
    assert!(refused > 800, "{refused} flips");
    for len in (0..bytes.len()).step_by(13).chain([bytes.len() - 1]) {
        std::fs::write(&bad, &bytes[..len]).expect("writes");
        match load_into(&mut opt, &before, &bad) {
            CheckpointError::Truncated { found, .. } => assert_eq!(found, len as u64),
            other => panic!("cut at {len}: expected Truncated, got {other:?}"),
        }
    }
    // The intact file loads, bit for bit.
    opt.load_checkpoint(&path).expect("loads");
    assert_eq!(snapshot(&opt), snapshot(&saved));
    std::fs::remove_dir_all(dir).ok();
}

/// Rewrites a format-3 checkpoint as format 2 wrote it: no length, no checksum.
fn as_format_2(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).expect("reads");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
    let mut md = header.metadata().clone().expect("metadata");
    md.insert("gdc.format".into(), "gdc-checkpoint-2".into());
    md.remove("gdc.checksum");
    md.remove("gdc.file_length");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    std::fs::write(to, safetensors::serialize(st.tensors(), Some(md)).expect("serializes")).expect("writes");
}

#[test]
fn format_2_files_still_load_but_carry_no_integrity_check() {
    let dir = scratch("format2");
    let path = dir.join("opt.safetensors");
    let saved = stepped(3, 0.3);
    saved.save_checkpoint(&path).expect("saves");
    let old = dir.join("old.safetensors");
    as_format_2(&path, &old);
    let mut opt = stepped(0, 0.0);
    opt.load_checkpoint(&old).expect("format 2 loads");
    assert_eq!(snapshot(&opt), snapshot(&saved));
    // Saving it again writes format 3.
    opt.save_checkpoint(&path).expect("saves");
    assert_eq!(checkpoint::load(&path).expect("loads").0.format(), "gdc-checkpoint-3");

    // Its length is checked: a cut is still Truncated ...
    let bytes = std::fs::read(&old).expect("reads");
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("writes");
    assert!(matches!(checkpoint::load(&cut), Err(CheckpointError::Truncated { .. })));
    // ... but its bytes are not: a flipped bit in the data loads, silently wrong. This is
    // what format 3 fixes.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&cut, &flipped).expect("writes");
    let (_, ts) = checkpoint::load(&cut).expect("no checksum to catch it");
    let good = checkpoint::load(&old).expect("loads").1;
    assert_ne!(bits(&ts), bits(&good));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_save_removes_temporary_files_a_killed_save_left_and_no_others() {
    let (dir, path) = saved("stale");
    let me = std::process::id();
    // A process that no longer exists (Linux pids stay below 2^22), this process in an earlier
    // life (same id, not one of its saves under way), a live process (our parent), and names
    // that are not a save's temporary file.
    let parent = std::os::unix::process::parent_id();
    let dead = ".opt.safetensors.tmp.4294967294.0".to_string();
    let earlier = format!(".opt.safetensors.tmp.{me}.999999");
    let live = format!(".opt.safetensors.tmp.{parent}.3");
    let others = [".opt.safetensors.tmp.notes", ".other.safetensors.tmp.4294967294.0", "opt.safetensors.tmp.1.1"];
    for name in [dead.as_str(), &earlier, &live].into_iter().chain(others) {
        std::fs::write(dir.join(name), b"half a checkpoint").expect("writes");
    }
    // Stale files do not stop a load.
    assert_eq!(checkpoint::load(&path).expect("loads").0.step, 1234);
    let mut m = meta();
    m.step = 1235;
    checkpoint::save(&path, &m, &tensors()).expect("saves");
    let mut want = vec![live.clone(), "opt.safetensors".to_string()];
    want.extend(others.iter().map(|s| s.to_string()));
    want.sort();
    assert_eq!(entries(&dir), want);
    assert_eq!(checkpoint::load(&path).expect("loads").0.step, 1235);
    std::fs::remove_dir_all(dir).ok();
}
