//! The GPU backend without a GPU: every example optimizer's kernels as MLIR (snapshotted),
//! lowered to PTX for sm_80 and sm_90 (with the `mlir` feature), and every PTX module
//! assembled by `ptxas -v` (PyPI's nvidia-cuda-nvcc-cu12): it must assemble, call nothing
//! external, and spill nothing. Under CI a missing ptxas is a failure, not a skip.

use gdc_compiler::gpu::{abi, mlir};

fn compile_file(path: &std::path::Path) -> gdc_compiler::Compiled {
    let source = gdc_dsl::policy::load(path).unwrap_or_else(|e| panic!("{e}"));
    gdc_compiler::compile(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn mlir_of_every_example() {
    insta::glob!("../../examples/optimizers", "*.gd", |path| {
        let c = compile_file(path);
        let text = mlir::module_text(&c.plan).expect("every example has GPU kernels");
        insta::assert_snapshot!("mlir", text);
    });
}

#[test]
fn every_kernel_of_the_plan_is_in_the_module_once() {
    let c = compile_file(std::path::Path::new("../examples/optimizers/adafactor.gd"));
    let text = mlir::module_text(&c.plan).unwrap();
    let kernels = abi::plan_kernels(&c.plan).unwrap();
    assert!(kernels.len() >= 2, "adafactor has several kernels");
    for (meta, _) in &kernels {
        assert_eq!(text.matches(&format!("gpu.func @{}(", meta.name)).count(), 1, "{}", meta.name);
    }
    assert!(kernels.iter().any(|(m, _)| m.mode == "grid"), "adafactor's factored statistics need a grid kernel");
}

#[cfg(feature = "mlir")]
mod ptx {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// `ptxas`: `$GDC_PTXAS`, or the one in PyPI's nvidia-cuda-nvcc-cu12.
    fn ptxas() -> Result<PathBuf, String> {
        if let Ok(p) = std::env::var("GDC_PTXAS") {
            return Ok(PathBuf::from(p));
        }
        let out = Command::new("python3")
            .args([
                "-c",
                "import nvidia.cuda_nvcc, os; print(os.path.join(list(nvidia.cuda_nvcc.__path__)[0], 'bin', 'ptxas'))",
            ])
            .output()
            .map_err(|e| format!("python3: {e}"))?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && p.is_file() {
            Ok(p)
        } else {
            Err("ptxas not found: run scripts/setup-mlir (installs PyPI's nvidia-cuda-nvcc-cu12)".into())
        }
    }

    /// Assembles `ptx` for `arch`; returns `ptxas -v`'s report.
    fn assemble(ptxas: &std::path::Path, name: &str, arch: &str, ptx: &str) -> String {
        let dir = std::env::temp_dir().join(format!("gdc-ptx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{arch}.ptx"));
        std::fs::write(&file, ptx).unwrap();
        let out = Command::new(ptxas)
            .args(["--gpu-name", arch, "-v", "-o", "/dev/null"])
            .arg(&file)
            .output()
            .expect("ptxas runs");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name} for {arch}: ptxas failed:\n{report}");
        report
    }

    #[test]
    fn every_example_lowers_to_ptx_that_assembles_without_spills() {
        let ptxas = match ptxas() {
            Ok(p) => Some(p),
            Err(why) if std::env::var("CI").is_ok() => panic!("{why}"),
            Err(why) => {
                eprintln!("skipping the ptxas check: {why}");
                None
            }
        };
        let dir = std::path::Path::new("../examples/optimizers");
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.retain(|p| p.extension().is_some_and(|e| e == "gd"));
        files.sort();
        assert!(files.len() >= 15);
        for path in &files {
            let c = compile_file(path);
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            for arch in gdc_compiler::gpu::ARCHES {
                let gpu = gdc_compiler::gpu::compile(&c.plan, arch).unwrap_or_else(|e| panic!("{name} {arch}: {e}"));
                assert!(!gpu.ptx.contains(".extern .func"), "{name} {arch}: unresolved call");
                assert!(gpu.ptx.contains(&format!(".target {arch}")), "{name} {arch}: wrong target");
                for k in &gpu.kernels {
                    assert!(gpu.ptx.contains(&format!(".entry {}(", k.name)), "{name} {arch}: no entry {}", k.name);
                }
                let Some(ptxas) = &ptxas else { continue };
                let report = assemble(ptxas, &name, arch, &gpu.ptx);
                let functions = report.matches("Compiling entry function").count();
                let distinct: std::collections::BTreeSet<&str> = gpu.kernels.iter().map(|k| k.name.as_str()).collect();
                assert_eq!(functions, distinct.len(), "{name} {arch}: {report}");
                let mut function = "";
                for line in report.lines() {
                    if let Some(f) = line.split("Function properties for ").nth(1) {
                        function = f;
                    }
                    if line.contains("spill") {
                        assert!(
                            line.contains("0 bytes spill stores, 0 bytes spill loads"),
                            "{name} {arch}: {function} spills registers: {line}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_unknown_architecture_is_refused() {
        let c = compile_file(std::path::Path::new("../examples/optimizers/sgd.gd"));
        let e = gdc_compiler::gpu::compile(&c.plan, "sm_13").unwrap_err();
        assert!(matches!(e, gdc_compiler::gpu::GpuError::Setup(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("sm_13") && e.contains("sm_90"), "{e}");
    }
}

#[test]
fn kernels_of_identical_code_share_one_function() {
    let source = std::fs::read_to_string("../examples/optimizers/muon.gd").unwrap();
    let c = gdc_compiler::compile(&source).unwrap();
    let text = mlir::module_text(&c.plan).unwrap();
    let kernels = abi::plan_kernels(&c.plan).unwrap();
    let functions: std::collections::BTreeSet<&str> = kernels.iter().map(|(m, _)| m.name.as_str()).collect();
    assert!(kernels.len() >= 500 && functions.len() <= 20, "{} kernels, {} functions", kernels.len(), functions.len());
    assert_eq!(text.matches("gpu.func @").count(), functions.len());
    // A function is named after the first kernel that runs it.
    for (meta, _) in &kernels {
        let own = abi::kernel_name(meta.variant, meta.init, meta.item);
        assert!(functions.contains(own.as_str()) == (own == meta.name), "{own} runs {}", meta.name);
    }
}
