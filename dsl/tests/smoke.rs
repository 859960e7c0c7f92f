//! The example optimizers parse and check cleanly.
#[test]
fn examples_check_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let src = gdc_dsl::policy::load(&path).unwrap();
        let (file, diags) = gdc_dsl::front_end(&src);
        let text = gdc_dsl::render(&diags, &path.display().to_string(), &src);
        assert!(file.is_some() && diags.is_empty(), "{text}");
    }
}
