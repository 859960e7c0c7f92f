//! Every optimizer of the experiment, on a short run, cuts the exact excess risk by a large
//! factor and moves G's row space towards the planted one; the command line writes its log,
//! table and plots, and refuses a broken `.gd` file and bad flags with a message.

use anisotropy::experiment::default_hypers;
use anisotropy::problem::Dims;
use anisotropy::train::{run, RunConfig};
use gdc_runtime::Program;
use std::path::PathBuf;
use std::process::Command;

fn optimizers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../optimizers")
}

fn program(name: &str) -> Program {
    gdc_train_kit::load_optimizer(&optimizers_dir().join(format!("{name}.gd"))).expect("the example compiles")
}

#[test]
fn each_optimizer_learns_the_features() {
    // lrs near the sweeps' choices; κ = 10, 400 steps. Measured at seed 7: the risk falls
    // 7e3x (muon) to 1.8e7x (shampoo) and the distance from 0.997 to 3e-4..1.4e-2.
    for (name, lr) in [("sgd", 0.03), ("adam", 0.01), ("shampoo", 0.3), ("soap", 0.01), ("muon", 0.01)] {
        let cfg = RunConfig {
            dims: Dims::default(),
            kappa: 10.0,
            lr,
            hypers: default_hypers(name),
            seed: 7,
            steps: 400,
            batch: 64,
            target_rel: 1e-3,
            distance_target: 0.1,
            log_every: 50,
        };
        let r = run(&program(name), &cfg, |_, _| {}).expect("the run completes");
        let drop = r.initial_risk / r.final_risk;
        eprintln!("{name}: risk {drop:.0}x down, distance {:.3} -> {:.4}", r.initial_distance, r.final_distance);
        assert!(!r.diverged, "{name}: diverged");
        assert!(
            drop > 1000.0,
            "{name}: excess risk {:.3e} -> {:.3e}, only {drop:.1}x down",
            r.initial_risk,
            r.final_risk
        );
        assert!(r.steps_to_target.is_some(), "{name}: never reached 1e-3 x the initial risk");
        assert!(
            r.final_distance < 0.25 * r.initial_distance && r.final_distance < 0.05,
            "{name}: subspace distance {:.3} -> {:.3}",
            r.initial_distance,
            r.final_distance
        );
        assert_eq!(r.curve.first().map(|c| c.0), Some(0));
        assert_eq!(r.curve.last().map(|c| c.0), Some(400));
        assert!(r.steps_to_distance.is_some(), "{name}: never reached distance 0.1");
        assert_eq!(r.distance_curve.len(), r.curve.len());
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anisotropy"))
}

#[test]
fn the_command_line_writes_the_log_table_and_plots() {
    let out = std::env::temp_dir().join(format!("anisotropy-cli-{}", std::process::id()));
    let status = bin()
        .args(["--optimizer", &optimizers_dir().join("adam.gd").display().to_string()])
        .args(["--kappas", "1,100", "--steps", "60", "--seeds", "2", "--tune-seeds", "1", "--lr-grid", "0.003,0.03"])
        .args(["--target", "0.1", "--out", &out.display().to_string()])
        .output()
        .expect("the binary runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("log.json")).expect("log written")).expect("valid JSON");
    // 2 κ × (2 lrs × 1 tuning seed + 2 seeds) runs.
    assert_eq!(log["runs"].as_array().map(Vec::len), Some(8));
    let md = std::fs::read_to_string(out.join("anisotropy.md")).expect("table written");
    assert!(md.contains("| adam | 100 |"), "{md}");
    for png in [
        "anisotropy-loss-kappa1.png",
        "anisotropy-loss-kappa100.png",
        "anisotropy-steps.png",
        "anisotropy-distance.png",
    ] {
        let bytes = std::fs::read(out.join(png)).expect("plot written");
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_broken_optimizer_file_and_bad_flags_are_refused() {
    let dir = std::env::temp_dir().join(format!("anisotropy-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.gd");
    std::fs::write(&bad, "optimizer bad {\n  update(p, g) {\n    p = p - lr * g\n  }\n}\n").expect("write");
    let o = bin()
        .args(["--optimizer", &bad.display().to_string(), "--out", &dir.display().to_string()])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.gd") && err.contains('^'), "{err}");

    let o = bin().args(["--all", "--kappas", "0.5"]).output().expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("κ = 0.5"));
    let o = bin().args(["--all", "--steps", "lots"]).output().expect("runs");
    assert_ne!(o.status.code(), Some(0));
    let o = bin().output().expect("runs");
    assert_ne!(o.status.code(), Some(0), "neither --optimizer nor --all");
    let o = bin().args(["--all", "--hyper", "momentum"]).output().expect("runs");
    assert_ne!(o.status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
