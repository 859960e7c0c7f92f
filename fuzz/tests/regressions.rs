//! Replays every input kept under `regressions/<target>/` (minimized fuzz findings and
//! hand-written inputs that guard a limit; one file per input, any name) so what they found
//! stays fixed on every `cargo test`. Every target's property holds for any text, so each
//! input goes through all three: the parser's, the checker's and the compiler's. The inputs
//! are bytes as libFuzzer wrote them; like the targets, the test skips any that are not UTF-8.

use std::path::Path;

/// Every input of every target's folder, as (target/name, text), sorted.
fn inputs() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut found = Vec::new();
    for target in ["parse", "check", "compile"] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        for path in entries.map(|entry| entry.expect("a directory entry").path()).filter(|p| p.is_file()) {
            let bytes = std::fs::read(&path).expect("a readable input");
            if let Ok(text) = String::from_utf8(bytes) {
                found.push((format!("{target}/{}", path.file_name().unwrap().to_string_lossy()), text));
            }
        }
    }
    found.sort();
    found
}

/// Runs `property` on every input; fails naming each one that breaks it.
fn replay(what: &str, property: fn(&str)) -> usize {
    let inputs = inputs();
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, text)| std::panic::catch_unwind(|| property(text)).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(failed.is_empty(), "the {what} fails again on regressions/{failed:?}");
    inputs.len()
}

/// As many inputs as were committed (six hand-written ones when this was written), so an
/// emptied or moved folder does not pass unnoticed.
const AT_LEAST: usize = 6;

#[test]
fn parser_regressions() {
    assert!(replay("parser", gdc_fuzz::parse_one) >= AT_LEAST);
}

#[test]
fn checker_regressions() {
    assert!(replay("checker", gdc_fuzz::check_one) >= AT_LEAST);
}

#[test]
fn compiler_regressions() {
    assert!(replay("compiler", gdc_fuzz::compile_one) >= AT_LEAST);
}
