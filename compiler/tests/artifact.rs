//! `.gdo` artifacts: every example round-trips and validates; truncation, corruption, a future
//! format, another compiler version and an edited plan are each refused with their own error;
//! the program hash is deterministic; writes are atomic.

use gdc_compiler::artifact::{program_hash, Artifact, ArtifactError, Target, COMPILER_VERSION, FORMAT_VERSION};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root().join("examples/optimizers"))
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "gd"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), gdc_dsl::policy::load(&p).expect("read")))
        .collect();
    out.sort();
    assert!(out.len() >= 10, "found {} examples", out.len());
    out
}

fn adamw() -> Artifact {
    let source = std::fs::read_to_string(root().join("examples/optimizers/adamw.gd")).expect("adamw");
    Artifact::build(&source, "adamw.gd", Target::Cpu).expect("adamw builds")
}

/// Splits a file into its header line (without newline) and body.
fn split(bytes: &[u8]) -> (String, Vec<u8>) {
    let nl = bytes.iter().position(|&b| b == b'\n').expect("header line");
    (String::from_utf8(bytes[..nl].to_vec()).expect("utf8"), bytes[nl + 1..].to_vec())
}

/// A file with `body` and a correct header for it, as a careful forger would write.
fn reframe(version: &str, body: &[u8]) -> Vec<u8> {
    let sum: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("GDC-ARTIFACT {version} {} {sum}\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The artifact's body as JSON, edited, framed with a recomputed checksum.
fn forged(a: &Artifact, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (_, body) = split(&a.to_bytes());
    let mut json: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    edit(&mut json);
    reframe(&FORMAT_VERSION.to_string(), &serde_json::to_vec_pretty(&json).expect("json"))
}

#[test]
fn every_example_round_trips_and_validates() {
    for (name, source) in examples() {
        let a = Artifact::build(&source, &name, Target::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a.format_version, FORMAT_VERSION);
        assert_eq!(a.compiler_version, COMPILER_VERSION);
        assert_eq!(a.target, "cpu");
        assert_eq!(a.source, source);
        assert_eq!(a.program_hash, program_hash(&source, "cpu"));
        assert!(!a.plan_text.is_empty() && a.plan_text.contains("kernel"), "{name}: {}", a.plan_text);
        assert_eq!(name, format!("{}.gd", a.optimizer), "the examples are named after their optimizer");
        let bytes = a.to_bytes();
        assert!(bytes.starts_with(format!("GDC-ARTIFACT {FORMAT_VERSION} ").as_bytes()));
        let back = Artifact::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, a, "{name}");
        assert_eq!(back.to_bytes(), bytes, "{name}: serialisation is deterministic");
        let compiled = back.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(compiled.plan.module.name, a.optimizer);
        assert_eq!(compiled.plan.module.hypers.len(), a.hypers.len());
        assert_eq!(compiled.plan.module.states.len(), a.states.len());
    }
}

#[test]
fn schemas_describe_hypers_and_states() {
    let a = adamw();
    let lr = a.hypers.iter().find(|h| h.name == "lr").expect("adamw has lr");
    assert_eq!(lr.ty, "f32");
    assert!(lr.default > 0.0 && lr.default < 1.0, "{lr:?}");
    let names: Vec<&str> = a.states.iter().map(|s| s.name.as_str()).collect();
    assert!(names.len() >= 2, "{names:?}");
    assert!(a.states.iter().all(|s| !s.shape.is_empty()), "{:?}", a.states);
    // Every schema number survives the trip through JSON exactly.
    let back = Artifact::from_bytes(&a.to_bytes()).expect("parses");
    for (x, y) in a.hypers.iter().zip(&back.hypers) {
        assert_eq!(x.default.to_bits(), y.default.to_bits(), "{}", x.name);
    }
}

#[test]
fn truncation_is_reported_never_a_panic() {
    let bytes = adamw().to_bytes();
    let header_len = bytes.iter().position(|&b| b == b'\n').expect("header") + 1;
    let mut lengths = vec![0, 1, 5, 12, 13, 14, 20, header_len - 1, header_len, header_len + 1, bytes.len() - 1];
    lengths.extend((0..bytes.len()).step_by(97));
    for len in lengths {
        match Artifact::from_bytes(&bytes[..len]) {
            Err(ArtifactError::Truncated { expected, got }) => {
                assert!(len >= header_len, "{len}");
                assert_eq!((expected, got), (bytes.len(), len));
            }
            Err(ArtifactError::TruncatedHeader { got }) => {
                assert!(len < header_len && len > 0, "{len}");
                assert_eq!(got, len);
            }
            Err(ArtifactError::NotAnArtifact { .. }) => assert_eq!(len, 0),
            other => panic!("truncated to {len} of {}: {other:?}", bytes.len()),
        }
    }
}

#[test]
fn one_flipped_byte_in_the_body_is_corruption() {
    let bytes = adamw().to_bytes();
    let header_len = bytes.iter().position(|&b| b == b'\n').expect("header") + 1;
    for at in (header_len..bytes.len()).step_by(31).chain([header_len, bytes.len() - 1]) {
        for mask in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= mask;
            match Artifact::from_bytes(&bad) {
                Err(e @ ArtifactError::Corrupt { .. }) => assert!(e.to_string().contains("checksum"), "{e}"),
                other => panic!("byte {at} ^ {mask:#x}: {other:?}"),
            }
        }
    }
    let mut longer = bytes.clone();
    longer.push(b' ');
    assert!(matches!(Artifact::from_bytes(&longer), Err(ArtifactError::Corrupt { .. })));
}

#[test]
fn another_format_version_is_unsupported() {
    let (_, body) = split(&adamw().to_bytes());
    match Artifact::from_bytes(&reframe("99", &body)) {
        Err(e @ ArtifactError::UnsupportedFormat { .. }) => {
            let ArtifactError::UnsupportedFormat { ref found, supported } = e else { unreachable!() };
            assert_eq!((found.as_str(), supported), ("99", FORMAT_VERSION));
            assert!(e.to_string().contains("gdc build"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_an_artifact_says_what_it_is() {
    let source = std::fs::read(root().join("examples/optimizers/adamw.gd")).expect("adamw");
    match Artifact::from_bytes(&source) {
        Err(e @ ArtifactError::NotAnArtifact { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("optimizer adamw") || msg.contains("//"), "{msg}");
            assert!(msg.contains(".gd source") && msg.contains("gdc build"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(Artifact::from_bytes(b"\x00\x01\x02"), Err(ArtifactError::NotAnArtifact { .. })));
    // A checksum-valid body that is not an artifact's JSON.
    assert!(matches!(
        Artifact::from_bytes(&reframe(&FORMAT_VERSION.to_string(), b"{\"x\": 1}")),
        Err(ArtifactError::Json(_))
    ));
}

#[test]
fn another_compiler_version_is_refused_at_validation() {
    let a = adamw();
    let bytes = forged(&a, |j| j["compiler_version"] = serde_json::json!("0.0.0-other"));
    let back = Artifact::from_bytes(&bytes).expect("checksum is valid");
    assert_eq!(back.compiler_version, "0.0.0-other");
    assert_eq!(
        Artifact { compiler_version: a.compiler_version.clone(), ..back.clone() },
        a,
        "only the version differs"
    );
    match back.validate() {
        Err(e @ ArtifactError::CompilerMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("0.0.0-other") && msg.contains(COMPILER_VERSION), "{msg}");
            assert!(msg.contains("rebuild with `gdc build`") || msg.contains("rebuild it with `gdc build`"), "{msg}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn edited_content_with_a_valid_checksum_is_stale() {
    let a = adamw();
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("plan_text", Box::new(|j| j["plan_text"] = serde_json::json!("kernel k0 over like(p) { }"))),
        ("program_hash", Box::new(|j| j["program_hash"] = serde_json::json!("00".repeat(32)))),
        ("optimizer", Box::new(|j| j["optimizer"] = serde_json::json!("sgd"))),
        ("hypers", Box::new(|j| j["hypers"][0]["default"] = serde_json::json!("0.5"))),
        ("states", Box::new(|j| j["states"][0]["shape"] = serde_json::json!("f32"))),
    ];
    for (field, edit) in edits {
        let back = Artifact::from_bytes(&forged(&a, edit)).unwrap_or_else(|e| panic!("{field}: {e}"));
        match back.validate() {
            Err(ArtifactError::Stale { field: f }) => assert_eq!(f, field),
            other => panic!("{field}: {:?}", other.map(|_| ())),
        }
    }
    // Editing the source without updating the hash is caught by the hash.
    let src = forged(&a, |j| {
        let s = j["source"].as_str().expect("source").replace("0.9", "0.8");
        j["source"] = serde_json::json!(s);
    });
    match Artifact::from_bytes(&src).expect("parses").validate() {
        Err(ArtifactError::Stale { field }) => assert_eq!(field, "program_hash"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A source that no longer compiles.
    let broken = forged(&a, |j| j["source"] = serde_json::json!("optimizer x { update(p, g) { p = q } }"));
    match Artifact::from_bytes(&broken).expect("parses").validate() {
        Err(ArtifactError::Compile(msg)) => assert!(msg.contains("error"), "{msg}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let cuda = forged(&a, |j| j["target"] = serde_json::json!("tpu"));
    match Artifact::from_bytes(&cuda).expect("parses").validate() {
        Err(e @ ArtifactError::UnknownTarget(_)) => assert!(e.to_string().contains("\"cpu\""), "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn program_hash_is_deterministic_and_distinguishes_programs() {
    let (_, adamw_src) = examples().into_iter().find(|(n, _)| n == "adamw.gd").expect("adamw");
    let h = program_hash(&adamw_src, "cpu");
    assert_eq!(h.len(), 64);
    assert!(h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{h}");
    assert_eq!(h, program_hash(&adamw_src, "cpu"));
    assert_eq!(h, adamw().program_hash);
    assert_ne!(h, program_hash(&adamw_src, "cuda"));
    assert_ne!(h, program_hash(&format!("{adamw_src} "), "cpu"));
    // The encoding is length-prefixed: moving text between target and source changes the hash.
    assert_ne!(program_hash("ab", "c"), program_hash("b", "ca"));
    let hashes: std::collections::HashSet<String> = examples().iter().map(|(_, s)| program_hash(s, "cpu")).collect();
    assert_eq!(hashes.len(), examples().len());
}

#[test]
fn write_is_atomic_and_overwrites() {
    let dir = std::env::temp_dir().join(format!("gdc-artifact-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("opt.gdo");
    std::fs::write(&path, b"an older, shorter file").expect("old file");
    let a = adamw();
    a.write(&path).expect("writes over the old file");
    assert_eq!(std::fs::read(&path).expect("read"), a.to_bytes());
    assert_eq!(Artifact::read(&path).expect("reads back"), a);
    // Overwrite with a different artifact.
    let sgd_src = std::fs::read_to_string(root().join("examples/optimizers/sgd.gd")).expect("sgd");
    let b = Artifact::build(&sgd_src, "sgd.gd", Target::Cpu).expect("sgd builds");
    b.write(&path).expect("overwrites");
    assert_eq!(Artifact::read(&path).expect("reads back"), b);
    let names: Vec<String> =
        std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    assert_eq!(names, vec!["opt.gdo".to_string()], "no temporary file is left behind");
    // A write into a missing directory fails cleanly and names the path.
    match a.write(dir.join("missing/opt.gdo")) {
        Err(e @ ArtifactError::Io { .. }) => assert!(e.to_string().contains("missing"), "{e}"),
        other => panic!("{other:?}"),
    }
    match Artifact::read(dir.join("nope.gdo")) {
        Err(e @ ArtifactError::Io { .. }) => assert!(e.to_string().contains("nope.gdo"), "{e}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A cuda artifact of AdamW whose PTX names the plan's entry points (enough to validate;
/// the real PTX is checked by tests/gpu.rs).
fn cuda_adamw() -> Artifact {
    let source = std::fs::read_to_string(root().join("examples/optimizers/adamw.gd")).expect("adamw");
    let mut a = Artifact::build(&source, "adamw.gd", Target::Cuda).expect("adamw builds");
    let plan = gdc_compiler::compile(&source).expect("compiles").plan;
    let kernels: Vec<_> =
        gdc_compiler::gpu::abi::plan_kernels(&plan).expect("lays out").into_iter().map(|(m, _)| m).collect();
    let ptx = kernels.iter().map(|k| format!(".visible .entry {}(\n)\n{{\n\tret;\n}}\n", k.name)).collect();
    a.gpu = Some(gdc_compiler::gpu::abi::GpuProgram { arch: "sm_90".into(), ptx, kernels });
    a
}

#[test]
fn a_cuda_artifact_round_trips_and_its_gpu_code_must_match_the_plan() {
    let a = cuda_adamw();
    let back = Artifact::from_bytes(&a.to_bytes()).expect("reads back");
    assert_eq!(back, a);
    back.validate().expect("validates");
    assert_ne!(a.program_hash, adamw().program_hash, "the target is part of the program hash");
    let refused = |bytes: Vec<u8>| Artifact::from_bytes(&bytes).and_then(|x| x.validate()).err().map(|e| e.to_string());
    // Without its GPU code.
    let e = refused(forged(&a, |j| {
        j.as_object_mut().unwrap().remove("gpu");
    }))
    .expect("refused");
    assert!(e.contains("without its GPU code"), "{e}");
    // A kernel table that is not the plan's.
    let e = refused(forged(&a, |j| j["gpu"]["kernels"][0]["buffers"] = serde_json::json!(9))).expect("refused");
    assert!(e.contains("gpu.kernels") && e.contains("rebuild"), "{e}");
    // PTX missing a kernel.
    let e = refused(forged(&a, |j| j["gpu"]["ptx"] = serde_json::json!("// nothing"))).expect("refused");
    assert!(e.contains("gpu.ptx"), "{e}");
    // GPU code in a cpu artifact.
    let mut cpu = adamw();
    cpu.gpu = a.gpu.clone();
    let e = cpu.validate().err().expect("refused").to_string();
    assert!(e.contains("gpu"), "{e}");
}

/// A program with per-step inputs lists them (name, shape, optional); an artifact whose list
/// was edited is stale, and one of a program without inputs has no `inputs` field at all.
#[test]
fn inputs_are_part_of_the_schema() {
    let source = std::fs::read_to_string(root().join("examples/optimizers/kfac.gd")).expect("kfac");
    let a = Artifact::build(&source, "kfac.gd", Target::Cpu).expect("kfac builds");
    let listed: Vec<(&str, &str, bool)> =
        a.inputs.iter().map(|x| (x.name.as_str(), x.shape.as_str(), x.optional)).collect();
    assert_eq!(listed, [("a", "[batch, cols]", false), ("s", "[batch, rows]", false)]);
    let back = Artifact::from_bytes(&a.to_bytes()).expect("reads");
    assert_eq!(back.inputs, a.inputs);
    back.validate().expect("validates");
    let edited = forged(&a, |j| j["inputs"][1]["optional"] = serde_json::json!(true));
    match Artifact::from_bytes(&edited).expect("parses").validate() {
        Err(ArtifactError::Stale { field }) => assert_eq!(field, "inputs"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let plain = String::from_utf8(adamw().to_bytes()).expect("utf8");
    assert!(!plain.contains("\"inputs\""), "no inputs, no field");
}

/// The CPU's LLVM tier in an artifact: it round-trips and validates; a kernel list that is
/// not the plan's, a level twice or an unknown level is refused; an object that does not
/// load (bytes edited under a recomputed checksum) is refused when the program is made,
/// where this CPU runs a level, and never runs.
#[cfg(feature = "mlir")]
#[test]
fn native_code_round_trips_and_must_match_the_plan() {
    let mut a = adamw();
    let plan = gdc_compiler::compile(&a.source).expect("compiles").plan;
    a.native = gdc_compiler::cpu::llvm::compile(&plan).expect("the LLVM tier compiles");
    assert_eq!(a.native.len(), 2, "both levels");
    let back = Artifact::from_bytes(&a.to_bytes()).expect("reads back");
    assert_eq!(back, a);
    back.validate().expect("validates");
    let refused = |bytes: Vec<u8>| Artifact::from_bytes(&bytes).and_then(|x| x.validate()).err().map(|e| e.to_string());
    let e = refused(forged(&a, |j| j["native"][0]["kernels"][1] = serde_json::Value::Null)).expect("refused");
    assert!(e.contains("native") && e.contains("rebuild"), "{e}");
    let e = refused(forged(&a, |j| j["native"][1]["level"] = j["native"][0]["level"].clone())).expect("refused");
    assert!(e.contains("native"), "{e}");
    let e = refused(forged(&a, |j| j["native"][0]["level"] = serde_json::json!("x86-64-v9"))).expect("refused");
    assert!(e.contains("x86-64-v9"), "{e}");
    // An object cut short: the artifact validates (only the checksum guards the bytes) but
    // the code does not load.
    let mut cut = a.clone();
    for n in &mut cut.native {
        n.object.truncate(200);
    }
    cut.validate().expect("the table still matches");
    match gdc_compiler::cpu::native::Level::best_available() {
        Some(_) => {
            let e = gdc_compiler::cpu::compile_with(&plan, &cut.native).err().expect("refused");
            assert!(e.contains("do not load") && e.contains("rebuild"), "{e}");
        }
        None => println!("skipped loading: this CPU runs no level of the LLVM tier"),
    }
}
