//! Every golden case of every example optimizer replays within its tolerance on the
//! reference interpreter, and the table covers every example file.

use gdc_compiler::golden::{read_case, replay};
use gdc_tests::{case_path, compile, root, OPTIMIZERS};

#[test]
fn every_golden_case_passes_on_the_interpreter() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for entry in OPTIMIZERS {
        for case in entry.cases {
            let c = compile(entry.name);
            let data = read_case(&case_path(case)).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(data.optimizer, entry.name, "{case} is a case of another optimizer");
            let steps = replay(c.plan, &data).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(steps.len(), data.steps.len());
            let worst = steps.iter().map(|s| s.worst).fold(0.0, f64::max);
            report.push(format!("{case:32} worst {worst:.4} of tolerance"));
            for s in steps.iter().filter(|s| s.worst.is_nan() || s.worst > 1.0) {
                failures.push(format!("{case} step {}: {:.3} of tolerance at {}", s.step, s.worst, s.at));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_covers_every_example_and_its_cases() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("examples/optimizers"))
        .expect("examples")
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_string))
        .collect();
    files.sort();
    let mut names: Vec<String> = OPTIMIZERS.iter().map(|e| e.name.to_string()).collect();
    names.sort();
    assert_eq!(files, names, "examples/optimizers and the table differ");
    for case in std::fs::read_dir(root().join("tests/golden")).expect("golden").filter_map(|e| e.ok()) {
        let stem = case.path().file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let Some((opt, _)) = stem.rsplit_once('-') else { continue };
        if let Some(entry) = OPTIMIZERS.iter().find(|e| e.name == opt) {
            assert!(entry.cases.contains(&stem.as_str()), "{stem} is not in the table");
        }
    }
}

#[test]
fn every_transcribed_case_passes_on_the_interpreter() {
    let dir = root().join("tests/transcribed/cases");
    let mut paths: Vec<std::path::PathBuf> =
        std::fs::read_dir(&dir).expect("cases").map(|e| e.expect("entry").path()).collect();
    paths.sort();
    assert!(paths.len() >= 40, "the transcribed cases are missing: {}", paths.len());
    let mut failures = Vec::new();
    for path in paths {
        let data = read_case(&path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let c = compile(&data.optimizer);
        let steps = replay(c.plan, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for s in steps.iter().filter(|s| s.worst.is_nan() || s.worst > 1.0) {
            failures.push(format!("{} step {}: {:.3} of tolerance at {}", path.display(), s.step, s.worst, s.at));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Replays every golden and transcribed case on a runtime backend; returns the failures.
fn failures_on(backend: gdc_runtime::Backend) -> (Vec<String>, Vec<String>) {
    let mut paths: Vec<String> = OPTIMIZERS.iter().flat_map(|e| e.cases.iter().map(|c| case_path(c))).collect();
    let mut transcribed: Vec<String> = std::fs::read_dir(root().join("tests/transcribed/cases"))
        .expect("cases")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    transcribed.sort();
    paths.extend(transcribed);
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for path in paths {
        let data = read_case(&path).unwrap_or_else(|e| panic!("{e}"));
        let program = gdc_runtime::Program::compile(&gdc_tests::source(&data.optimizer))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let steps = gdc_runtime::replay::replay(&program, &data, backend).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(steps.len(), data.steps.len());
        let worst = steps.iter().map(|s| s.worst).fold(0.0, f64::max);
        report.push(format!("{path:60} worst {worst:.4} of tolerance"));
        for s in steps.iter().filter(|s| s.worst.is_nan() || s.worst > 1.0) {
            failures.push(format!("{path} step {}: {:.3} of tolerance at {}", s.step, s.worst, s.at));
        }
    }
    (report, failures)
}

#[test]
fn every_golden_and_transcribed_case_passes_on_the_cpu_backend() {
    let (report, failures) = failures_on(gdc_runtime::Backend::Cpu);
    println!("{}", report.join("\n"));
    assert!(report.len() >= 60, "too few cases: {}", report.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
