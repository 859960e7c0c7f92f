//! Fuzz target `parse`: the parser alone (`gdc_dsl::parse`) on any UTF-8 text. It must not
//! panic, hang or exhaust memory; a file that parses and holds no policy must print to
//! canonical text that parses again and prints the same (what `gdc emit --stage ast` relies on).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    gdc_fuzz::parse_one(src);
});
