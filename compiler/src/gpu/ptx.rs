//! Lowers the kernels' MLIR text to PTX with MLIR/LLVM 22 through melior: parse and verify
//! the module, attach an NVVM target for the architecture (linking libdevice when a kernel
//! calls `exp`, `log`, `cos`, `pow` or `%`), convert `scf`/`gpu`/`math`/`arith` to the NVVM and
//! LLVM dialects, and serialise the `gpu.module` to PTX text. A result that still declares
//! an external function (an unresolved libdevice call) is refused: the CUDA driver could
//! not load it.

use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;

use super::GpuError;
use std::path::PathBuf;

/// The PTX ISA version asked of LLVM (8.0: CUDA 12.0 drivers and later load it).
const PTX_FEATURES: &str = "+ptx80";

/// The textual pass pipeline from a `gpu.module` to PTX, for `arch`, linking `libdevice`
/// if given.
pub fn pipeline(arch: &str, libdevice: Option<&str>) -> String {
    let link = libdevice.map(|l| format!(" l={l}")).unwrap_or_default();
    format!(
        "builtin.module(nvvm-attach-target{{chip={arch} features={PTX_FEATURES} O=3{link}}},\
         gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm,convert-math-to-llvm,convert-arith-to-llvm,\
         reconcile-unrealized-casts),gpu-module-to-binary{{format=isa}})"
    )
}

/// Where libdevice (`libdevice.10.bc`) is: `$GDC_LIBDEVICE`, a CUDA toolkit (`$CUDA_HOME`,
/// `/usr/local/cuda`), or PyPI's `nvidia-cuda-nvcc-cu12` as `scripts/setup-mlir` installs it.
pub fn find_libdevice() -> Result<PathBuf, GpuError> {
    if let Ok(p) = std::env::var("GDC_LIBDEVICE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(GpuError::Setup(format!("GDC_LIBDEVICE={} is not a file", p.display())))
        };
    }
    let mut candidates = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(root) = std::env::var(var) {
            candidates.push(PathBuf::from(root).join("nvvm/libdevice/libdevice.10.bc"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/nvvm/libdevice/libdevice.10.bc"));
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Ok(p);
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import nvidia.cuda_nvcc, os; print(os.path.join(list(nvidia.cuda_nvcc.__path__)[0], \
             'nvvm', 'libdevice', 'libdevice.10.bc'))",
        ])
        .output();
    if let Ok(out) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && p.is_file() {
            return Ok(p);
        }
    }
    Err(GpuError::Setup(
        "libdevice.10.bc not found: this optimizer calls exp, log, cos, pow or %, which come from CUDA's \
         libdevice; run scripts/setup-mlir (installs PyPI's nvidia-cuda-nvcc-cu12) or set GDC_LIBDEVICE"
            .into(),
    ))
}

/// Lowers `mlir` (a module holding `gpu.module @gdc`) to PTX for `arch`.
pub fn lower(mlir: &str, arch: &str) -> Result<String, GpuError> {
    let bug = GpuError::Internal;
    let libdevice = if mlir.contains("math.") || mlir.contains("arith.remf") {
        Some(find_libdevice()?.display().to_string())
    } else {
        None
    };
    let context = crate::mlir_context::new_context();
    let mut module = Module::parse(&context, mlir)
        .ok_or_else(|| bug("the generated MLIR does not parse or verify (see `gdc emit --stage mlir`)".into()))?;
    let pm = PassManager::new(&context);
    parse_pass_pipeline(pm.as_operation_pass_manager(), &pipeline(arch, libdevice.as_deref()))
        .map_err(|e| bug(format!("the PTX pass pipeline is not valid: {e}")))?;
    pm.run(&mut module).map_err(|e| bug(format!("lowering the kernels to PTX for {arch} failed: {e}")))?;
    let text = module.as_operation().to_string();
    let ptx = assembly(&text).ok_or_else(|| bug("the lowered module holds no PTX assembly".into()))?;
    if let Some(line) = ptx.lines().find(|l| l.contains(".extern .func")) {
        return Err(bug(format!("the PTX calls an external function the driver cannot resolve: `{}`", line.trim())));
    }
    Ok(ptx)
}

/// The PTX in a `#gpu.object<..., assembly = "...">` of printed MLIR, unescaped (MLIR
/// prints bytes outside printable ASCII, quotes and backslashes as `\XX` hex).
fn assembly(printed: &str) -> Option<String> {
    let at = printed.find("assembly = \"")? + "assembly = \"".len();
    let bytes = &printed.as_bytes()[at..];
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return String::from_utf8(out).ok(),
            b'\\' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::assembly;

    #[test]
    fn assembly_is_unescaped() {
        let printed = r#"gpu.binary @m [#gpu.object<#nvvm.target, assembly = "a\0Ab\22c\5Cd">]"#;
        assert_eq!(assembly(printed).as_deref(), Some("a\nb\"c\\d"));
    }
}
