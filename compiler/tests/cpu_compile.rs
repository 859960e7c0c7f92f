//! The CPU backend compiles each distinct kernel body once: Muon's unrolled Newton–Schulz
//! iterations (up to 99) share a handful of machine-code functions, and every kernel still
//! gets its own ABI (its own buffers).

#[test]
fn identical_kernels_share_one_compilation() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/muon.gd");
    let source = std::fs::read_to_string(path).expect("muon.gd");
    let compiled = gdc_compiler::compile(&source).expect("compiles");
    let code = gdc_compiler::cpu::compile(&compiled.plan).expect("machine code");
    let kernels: Vec<_> = code.variants.iter().flat_map(|(i, u)| i.iter().chain(u)).flatten().collect();
    assert!(kernels.len() >= 500, "muon.gd unrolls 99 iterations: {} kernels", kernels.len());
    assert!(code.functions <= 20, "{} functions for {} kernels", code.functions, kernels.len());
    // Shared code, distinct tables: kernels with one entry point read different buffers.
    let mut by_entry: std::collections::HashMap<usize, Vec<_>> = std::collections::HashMap::new();
    for k in &kernels {
        by_entry.entry(k.entry as usize).or_default().push(&k.abi);
    }
    assert_eq!(by_entry.len(), code.functions);
    assert!(by_entry.values().any(|abis| abis.windows(2).any(|w| w[0].buffers != w[1].buffers)));

    // A program without repeats compiles every kernel.
    let adamw = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/adamw.gd"))
        .expect("adamw.gd");
    let code = gdc_compiler::cpu::compile(&gdc_compiler::compile(&adamw).expect("compiles").plan).expect("code");
    let n = code.variants.iter().flat_map(|(i, u)| i.iter().chain(u)).flatten().count();
    assert_eq!(code.functions, n);
}
