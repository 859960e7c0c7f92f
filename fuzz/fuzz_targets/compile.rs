//! Fuzz target `compile`: `gdc_compiler::compile` on any UTF-8 text: the front end, then
//! lowering, the verifier, every pass and the kernel plan (policies included, since the
//! front end merges them). Everything after the checker is total on checked input, so an
//! internal error is a finding just as a panic, a hang or a memory blow-up is.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    gdc_fuzz::compile_one(src);
});
