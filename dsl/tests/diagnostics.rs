//! Diagnostic snapshots: every `tests/diagnostics/*.gd` file is parsed and checked, and its
//! rendered diagnostics are snapshotted. The first line of each file, `// expect: E0005 ...`,
//! names the codes it must produce, so a wrong code fails the test even when the snapshot is
//! accepted blindly.

use std::collections::BTreeSet;
use std::path::Path;

/// The codes of the `// expect:` line that opens a test file.
fn expected_codes(path: &Path, src: &str) -> BTreeSet<String> {
    let first = src.lines().next().unwrap_or_default();
    let Some(codes) = first.strip_prefix("// expect:") else {
        panic!("{} must start with `// expect: CODE ...`", path.display());
    };
    codes.split_whitespace().map(str::to_string).collect()
}

#[test]
fn diagnostics() {
    let mut failures = Vec::new();
    insta::glob!("diagnostics/*.gd", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let want = expected_codes(path, &src);
        let (file, diags) = gdc_dsl::front_end(&src);
        let text = gdc_dsl::render(&diags, &name, &src);
        let got: BTreeSet<String> = diags.iter().map(|d| d.code.to_string()).collect();
        if got != want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}\n{text}"));
        }
        let errors = diags.iter().any(|d| d.is_error());
        if file.is_some() == errors {
            failures.push(format!("{name}: an AST must come back exactly when there are no errors"));
        }
        insta::assert_snapshot!(text);
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
