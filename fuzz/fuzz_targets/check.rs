//! Fuzz target `check`: the whole front end (`gdc_dsl::front_end`: parse, check, policy
//! merge) and the rendering of its diagnostics, on any UTF-8 text. Beyond not panicking,
//! hanging or exhausting memory, it keeps its contract: an AST exactly when there is no
//! error, and every diagnostic's span inside the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    gdc_fuzz::check_one(src);
});
