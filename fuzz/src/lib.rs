//! What each fuzz target checks on one input, shared by the libFuzzer targets in
//! `fuzz_targets/` and by the regression test (`tests/regressions.rs`), which replays every
//! minimized input under `regressions/<target>/` on every `cargo test`. Each function panics,
//! with a message saying which property broke, when the input breaks one.

/// The parser on `src`; a parsed file without policies prints canonically.
pub fn parse_one(src: &str) {
    let Ok(file) = gdc_dsl::parse(src) else { return };
    if !file.policies.is_empty() || !file.uses.is_empty() {
        return; // the printer prints optimizers and functions only
    }
    let once = gdc_dsl::print::file_text(&file);
    let reparsed = match gdc_dsl::parse(&once) {
        Ok(f) => f,
        Err(d) => panic!("the printed text does not parse:\n{once}\n{}", gdc_dsl::render(&d, "printed.gd", &once)),
    };
    let twice = gdc_dsl::print::file_text(&reparsed);
    assert_eq!(once, twice, "printing is not idempotent");
}

/// The front end and the renderer on `src`, with the front end's contract.
pub fn check_one(src: &str) {
    let (file, diags) = gdc_dsl::front_end(src);
    let rendered = gdc_dsl::render(&diags, "input.gd", src);
    let has_error = gdc_dsl::has_errors(&diags);
    assert!(
        file.is_some() != has_error,
        "an AST must come back exactly when there is no error (AST: {}, errors: {has_error}):\n{rendered}",
        file.is_some()
    );
    if let Some(d) = diags.iter().find(|d| d.span.start > d.span.end || d.span.end as usize > src.len()) {
        panic!("{} has span {:?} outside the input ({} bytes)", d.code, d.span, src.len());
    }
}

/// The whole compiler on `src`: a source error is fine, an internal error is a bug.
pub fn compile_one(src: &str) {
    if let Err(gdc_compiler::CompileError::Internal(e)) = gdc_compiler::compile(src) {
        panic!("internal compiler error: {e}");
    }
}
