//! The AST's text form is canonical source: printing a parsed file and parsing the text again
//! gives the same text, and the reprinted program checks exactly as the original did.

use std::path::PathBuf;

fn sources() -> Vec<(PathBuf, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [root.join("../examples/optimizers"), root.join("tests/diagnostics")] {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            out.push((path, text));
        }
    }
    out.sort();
    out
}

fn codes(diags: &[gdc_dsl::Diagnostic]) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = diags.iter().map(|d| d.code).collect();
    c.sort();
    c.dedup();
    c
}

#[test]
fn printing_is_canonical_and_keeps_meaning() {
    let mut printed_files = 0;
    for (path, src) in sources() {
        let Ok(file) = gdc_dsl::parse(&src) else { continue };
        let once = gdc_dsl::print::file_text(&file);
        let reparsed = gdc_dsl::parse(&once).unwrap_or_else(|d| {
            panic!(
                "{}: the printed text does not parse:\n{}\n{once}",
                path.display(),
                gdc_dsl::render(&d, "printed.gd", &once)
            )
        });
        let twice = gdc_dsl::print::file_text(&reparsed);
        assert_eq!(once, twice, "{}: printing is not idempotent", path.display());
        assert_eq!(
            codes(&gdc_dsl::check(&file)),
            codes(&gdc_dsl::check(&reparsed)),
            "{}: the printed program checks differently",
            path.display()
        );
        printed_files += 1;
    }
    assert!(printed_files > 50, "{printed_files}");
}

#[test]
fn the_printed_form_shows_the_grouping() {
    let file = gdc_dsl::parse("optimizer t { update(p, g) { p = -p ^ 2 * 3 + g.T @ g - 1e-8 } }").expect("parses");
    let text = gdc_dsl::print::file_text(&file);
    assert!(text.contains("p = ((((-(p ^ 2)) * 3) + (g.T @ g)) - 1e-8)"), "{text}");
}
