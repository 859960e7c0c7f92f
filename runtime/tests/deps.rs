//! The runtime links no compiler backend: a GPU host has only the NVIDIA driver, so
//! `gdc-runtime` (with its `cuda` feature) must not pull in MLIR or LLVM, while it does pull
//! in cudarc (the check would otherwise pass for the wrong reason).

use std::process::Command;

#[test]
fn the_runtime_does_not_link_mlir_or_llvm() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(&cargo)
        .args(["tree", "-p", "gdc-runtime", "-e", "normal", "--prefix", "none", "--features", "cuda", "--offline"])
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cargo} tree`: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "`cargo tree` failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let crates: Vec<&str> = stdout.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    for banned in ["melior", "mlir-sys", "tblgen"] {
        let found: Vec<&&str> = crates.iter().filter(|l| l.starts_with(banned)).collect();
        assert!(found.is_empty(), "gdc-runtime depends on {found:?}: the runtime must not link MLIR/LLVM");
    }
    assert!(crates.iter().any(|l| l.starts_with("cudarc ")), "cudarc is not in gdc-runtime's tree:\n{stdout}");
}
