//! Replays every minimized fuzz finding kept under `regressions/<target>/` (one file per
//! input, any name) through the property its target checks, so a bug the fuzzer found stays
//! fixed on every `cargo test`. The inputs are bytes as libFuzzer wrote them; like the
//! targets, the test skips any that are not UTF-8.

use std::path::Path;

/// The inputs of one target's folder, sorted by name (none when the folder is absent).
fn inputs(target: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut found: Vec<(String, String)> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .filter_map(|path| {
            let bytes = std::fs::read(&path).expect("a readable input");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            String::from_utf8(bytes).ok().map(|text| (name, text))
        })
        .collect();
    found.sort();
    found
}

/// Runs `property` on every input of `target`; fails naming each input that broke it.
fn replay(target: &str, property: fn(&str)) -> usize {
    let inputs = inputs(target);
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, text)| std::panic::catch_unwind(|| property(text)).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(failed.is_empty(), "regressions/{target}: these inputs fail again: {failed:?}");
    inputs.len()
}

#[test]
fn parser_regressions() {
    replay("parse", gdc_fuzz::parse_one);
}

#[test]
fn checker_regressions() {
    replay("check", gdc_fuzz::check_one);
}

#[test]
fn compiler_regressions() {
    replay("compile", gdc_fuzz::compile_one);
}
