//! Versioned build artifacts (`.gdo`): a compiled optimizer with its source, schemas and plan,
//! framed by a checksummed header, written atomically and validated by recompiling at load.
//!
//! Layout (see `docs/artifacts.md`): one header line
//! `GDC-ARTIFACT <format_version> <body_len> <sha256 hex of body>\n`, then a JSON body of
//! exactly `body_len` bytes. The header catches truncation and corruption; [`Artifact::validate`]
//! recompiles the stored source and compares, so a file edited with a recomputed checksum is
//! refused rather than trusted.

use crate::cpu::native::NativeLevel;
use crate::gpu::abi::{plan_kernels, GpuProgram};
use crate::ir::HyperTy;
use crate::{compile, plan, CompileError, Compiled};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The version of the file layout and body schema this compiler reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// The version of the compiler that builds and accepts artifacts.
pub const COMPILER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The first word of every artifact.
pub const MAGIC: &str = "GDC-ARTIFACT";
/// The longest header line accepted (magic, three fields, newline), well above any real one.
const MAX_HEADER: usize = 256;

/// A backend an artifact is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// JIT-compiled at load on the host CPU.
    Cpu,
    /// PTX for NVIDIA GPUs, made at build time (the artifact carries it: a GPU host needs
    /// no compiler backend), loaded by the CUDA driver.
    Cuda,
}

impl Target {
    /// Every known target.
    pub const ALL: [Target; 2] = [Target::Cpu, Target::Cuda];

    /// The target's name as stored in artifacts and hashed (`"cpu"`, `"cuda"`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Cuda => "cuda",
        }
    }

    /// The target with this name, if it is known.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hyperparameter as the artifact's consumers see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperSchema {
    pub name: String,
    /// `"f32"`, `"int"` or `"bool"`.
    pub ty: String,
    /// Booleans are 0 or 1. Stored as exact decimal text (see [`exact_f64`]).
    #[serde(with = "exact_f64")]
    pub default: f64,
    /// The inclusive range, if declared. Stored as exact decimal text.
    #[serde(with = "exact_range")]
    pub range: Option<(f64, f64)>,
    /// `optional hyper`: may be unset (NaN; the default of `= none`).
    #[serde(default)]
    pub optional: bool,
}

/// Equal when every field is, the defaults bit for bit (an unset default is NaN).
impl PartialEq for HyperSchema {
    fn eq(&self, other: &HyperSchema) -> bool {
        self.name == other.name
            && self.ty == other.ty
            && self.default.to_bits() == other.default.to_bits()
            && self.range == other.range
            && self.optional == other.optional
    }
}

/// A state variable: its name and printed shape (`like(p)`, `[rows]`, `f32`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSchema {
    pub name: String,
    pub shape: String,
}

/// A per-step input: its name, printed shape (`like(p)`, `[batch, cols]`) and whether a step
/// may come without it; what training code must hand over with the steps that read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSchema {
    pub name: String,
    pub shape: String,
    pub optional: bool,
}

/// One compiled optimizer as stored in a `.gdo` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub format_version: u32,
    pub compiler_version: String,
    /// A [`Target`] name: `"cpu"` or `"cuda"`.
    pub target: String,
    /// The file name the source was built from (for diagnostics only; not hashed).
    pub source_name: String,
    pub source: String,
    /// [`program_hash`] of (`source`, `target`); checkpoints use it to tie state to a program.
    pub program_hash: String,
    /// The optimizer's name.
    pub optimizer: String,
    pub hypers: Vec<HyperSchema>,
    pub states: Vec<StateSchema>,
    /// Per-step inputs (absent from the file when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSchema>,
    /// `plan::print::plan_text` of the plan.
    pub plan_text: String,
    /// The GPU code (target `cuda` only): PTX and per-kernel metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuProgram>,
    /// The CPU's LLVM tier: per x86-64 level, an object of the flat kernels (absent when
    /// built without it). Loaded where the CPU has the level; Cranelift runs the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native: Vec<NativeLevel>,
}

/// Why an artifact cannot be read, written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "not a gdc artifact: it starts with {starts_with:?} instead of `{MAGIC}`; \
         is it a .gd source? build it with `gdc build FILE.gd -o FILE.gdo`"
    )]
    NotAnArtifact { starts_with: String },
    #[error(
        "artifact format {found} is not supported: this gdc reads format {supported}; \
         rebuild the artifact from its .gd source with `gdc build`"
    )]
    UnsupportedFormat { found: String, supported: u32 },
    #[error(
        "the artifact's header is cut short after {got} bytes: the file is truncated; rebuild it with `gdc build`"
    )]
    TruncatedHeader { got: usize },
    #[error(
        "the artifact is truncated: its header promises {expected} bytes but the file has {got}; \
         rebuild it with `gdc build`"
    )]
    Truncated { expected: usize, got: usize },
    #[error("the artifact is corrupt: {detail}; rebuild it with `gdc build`")]
    Corrupt { detail: String },
    #[error("the artifact's body is not valid: {0}; rebuild it with `gdc build`")]
    Json(String),
    #[error(
        "the artifact was built with gdc {built_with} but this is gdc {running}; \
         rebuild it with `gdc build`"
    )]
    CompilerMismatch { built_with: String, running: String },
    #[error("unknown target {0:?}: this gdc builds for {targets}", targets = known_targets())]
    UnknownTarget(String),
    #[error(
        "the artifact's {field} does not match what its source compiles to (the file was edited); \
         rebuild it with `gdc build`"
    )]
    Stale { field: &'static str },
    #[error("the artifact's source does not compile:\n{0}")]
    Compile(String),
}

fn known_targets() -> String {
    Target::ALL.iter().map(|t| format!("{t:?}", t = t.name())).collect::<Vec<_>>().join(", ")
}

/// Lowercase hex of a SHA-256 digest.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The program hash: hex SHA-256 over a length-prefixed encoding of (format version, compiler
/// version, target, source). Deterministic; any change to one of them changes it.
pub fn program_hash(source: &str, target: &str) -> String {
    let mut buf = Vec::with_capacity(source.len() + 64);
    buf.extend_from_slice(b"gdc-program-hash\0");
    for field in [FORMAT_VERSION.to_string().as_str(), COMPILER_VERSION, target, source] {
        buf.extend_from_slice(&(field.len() as u64).to_le_bytes());
        buf.extend_from_slice(field.as_bytes());
    }
    sha256_hex(&buf)
}

fn hyper_ty_name(ty: HyperTy) -> &'static str {
    match ty {
        HyperTy::F32 => "f32",
        HyperTy::Int => "int",
        HyperTy::Bool => "bool",
        HyperTy::Precision => "precision",
    }
}

/// The hyperparameter and state schemas of a compiled program.
fn schemas(c: &Compiled) -> (Vec<HyperSchema>, Vec<StateSchema>) {
    let m = &c.plan.module;
    let hypers = m
        .hypers
        .iter()
        .map(|h| HyperSchema {
            name: h.name.clone(),
            ty: hyper_ty_name(h.ty).into(),
            default: h.default,
            range: h.range,
            optional: h.optional,
        })
        .collect();
    let states = m.states.iter().map(|s| StateSchema { name: s.name.clone(), shape: s.shape.to_string() }).collect();
    (hypers, states)
}

impl Artifact {
    /// Compiles `source` and fills every field.
    pub fn build(source: &str, source_name: &str, target: Target) -> Result<Artifact, CompileError> {
        let compiled = compile(source)?;
        Ok(Artifact::from_compiled(&compiled, source, source_name, target))
    }

    /// The artifact of an already compiled `source` (as `gdc build` does after printing warnings).
    pub fn from_compiled(compiled: &Compiled, source: &str, source_name: &str, target: Target) -> Artifact {
        let (hypers, states) = schemas(compiled);
        Artifact {
            format_version: FORMAT_VERSION,
            compiler_version: COMPILER_VERSION.to_string(),
            target: target.name().to_string(),
            source_name: source_name.to_string(),
            source: source.to_string(),
            program_hash: program_hash(source, target.name()),
            optimizer: compiled.plan.module.name.clone(),
            hypers,
            states,
            inputs: compiled
                .plan
                .module
                .inputs
                .iter()
                .map(|x| InputSchema { name: x.name.clone(), shape: x.shape.to_string(), optional: x.optional })
                .collect(),
            plan_text: plan::print::plan_text(&compiled.plan),
            gpu: None,
            native: Vec::new(),
        }
    }

    /// The file's bytes: header line, then the JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, integers and vectors cannot fail.
        let mut body = serde_json::to_vec_pretty(self).unwrap_or_default();
        body.push(b'\n');
        frame(self.format_version, &body)
    }

    /// Parses and checks the header (magic, version, length, checksum), then the JSON body.
    /// Does not recompile: call [`Artifact::validate`] before trusting the content.
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        let (version, body) = unframe(bytes)?;
        let artifact: Artifact = serde_json::from_slice(body).map_err(|e| ArtifactError::Json(e.to_string()))?;
        if artifact.format_version != version {
            return Err(ArtifactError::Corrupt {
                detail: format!("the header says format {version} but the body says {}", artifact.format_version),
            });
        }
        Ok(artifact)
    }

    /// Writes the artifact atomically: to a temporary file in the same directory, synced, then
    /// renamed over `path`, then the directory synced. A failed or interrupted write leaves any
    /// previous file at `path` intact.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ArtifactError> {
        write_atomic(path.as_ref(), &self.to_bytes())
    }

    /// Reads and parses an artifact file (see [`Artifact::from_bytes`]).
    pub fn read(path: impl AsRef<Path>) -> Result<Artifact, ArtifactError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ArtifactError::Io { path: path.into(), source })?;
        Artifact::from_bytes(&bytes)
    }

    /// Checks that the artifact is what this compiler builds from its source: same compiler
    /// version, a known target, and, after recompiling, the same program hash, optimizer name,
    /// schemas and plan. Returns the compilation to run.
    pub fn validate(&self) -> Result<Compiled, ArtifactError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ArtifactError::UnsupportedFormat {
                found: self.format_version.to_string(),
                supported: FORMAT_VERSION,
            });
        }
        if self.compiler_version != COMPILER_VERSION {
            return Err(ArtifactError::CompilerMismatch {
                built_with: self.compiler_version.clone(),
                running: COMPILER_VERSION.to_string(),
            });
        }
        let Some(target) = Target::from_name(&self.target) else {
            return Err(ArtifactError::UnknownTarget(self.target.clone()));
        };
        let compiled = compile(&self.source).map_err(|e| match e {
            CompileError::Source(diags) => {
                ArtifactError::Compile(gdc_dsl::render(&diags, &self.source_name, &self.source))
            }
            e @ CompileError::Internal(_) => ArtifactError::Compile(e.to_string()),
        })?;
        let fresh = Artifact::from_compiled(&compiled, &self.source, &self.source_name, target);
        let fields: [(&'static str, bool); 6] = [
            ("program_hash", fresh.program_hash == self.program_hash),
            ("optimizer", fresh.optimizer == self.optimizer),
            ("hypers", fresh.hypers == self.hypers),
            ("states", fresh.states == self.states),
            ("inputs", fresh.inputs == self.inputs),
            ("plan_text", fresh.plan_text == self.plan_text),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, same)| !same) {
            return Err(ArtifactError::Stale { field });
        }
        match (target, &self.gpu) {
            (Target::Cpu, None) => {}
            (Target::Cpu, Some(_)) => return Err(ArtifactError::Stale { field: "gpu" }),
            (Target::Cuda, None) => {
                return Err(ArtifactError::Corrupt { detail: "a cuda artifact without its GPU code".into() })
            }
            (Target::Cuda, Some(gpu)) => {
                // The PTX cannot be remade without the MLIR backend (a GPU host has none); the
                // checksum guards its bytes, and its kernel table must be the plan's.
                let want = plan_kernels(&compiled.plan).map_err(ArtifactError::Compile)?;
                if gpu.kernels.len() != want.len() || gpu.kernels.iter().zip(&want).any(|(a, (b, _))| a != b) {
                    return Err(ArtifactError::Stale { field: "gpu.kernels" });
                }
                if gpu.kernels.iter().any(|k| !gpu.ptx.contains(&format!(".entry {}(", k.name))) {
                    return Err(ArtifactError::Stale { field: "gpu.ptx" });
                }
            }
        }
        self.validate_native(&compiled.plan)?;
        Ok(compiled)
    }

    /// The LLVM tier's code cannot be remade where it is loaded (no LLVM there): the checksum
    /// guards its bytes; each level appears once and names a function for exactly the kernel
    /// items the tier compiles ([`crate::cpu::mlir::supported`]), and its object must load
    /// and hold them (checked when the program is made, by [`crate::cpu::compile_with`]).
    fn validate_native(&self, plan: &plan::Plan) -> Result<(), ArtifactError> {
        let mut want = Vec::new();
        for (vp, vm) in plan.variants.iter().zip(&plan.module.variants) {
            for (fp, func) in [(&vp.init, &vm.init), (&vp.update, &vm.update)] {
                for item in &fp.items {
                    if let plan::Item::Kernel(k) = item {
                        let abi = crate::cpu::abi::layout(func, k).map_err(ArtifactError::Compile)?;
                        want.push(crate::cpu::mlir::supported(func, k, &abi));
                    }
                }
            }
        }
        for (i, n) in self.native.iter().enumerate() {
            if self.native[..i].iter().any(|m| m.level == n.level)
                || n.kernels.len() != want.len()
                || n.kernels.iter().zip(&want).any(|(k, w)| k.is_some() != *w)
            {
                return Err(ArtifactError::Stale { field: "native" });
            }
        }
        Ok(())
    }
}

/// Prefixes `body` with the header line for format `version`.
fn frame(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{MAGIC} {version} {} {}\n", body.len(), sha256_hex(body)).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Checks the header and returns the format version and the body.
fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), ArtifactError> {
    let magic = format!("{MAGIC} ");
    let prefix = &bytes[..bytes.len().min(magic.len())];
    if bytes.is_empty() || !magic.as_bytes().starts_with(prefix) {
        let head = &bytes[..bytes.len().min(40)];
        let head = head.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(ArtifactError::NotAnArtifact { starts_with: String::from_utf8_lossy(head).into_owned() });
    }
    let Some(newline) = bytes.iter().take(MAX_HEADER).position(|&b| b == b'\n') else {
        if bytes.len() < MAX_HEADER {
            return Err(ArtifactError::TruncatedHeader { got: bytes.len() });
        }
        return Err(ArtifactError::Corrupt { detail: format!("no header line in the first {MAX_HEADER} bytes") });
    };
    let header = std::str::from_utf8(&bytes[magic.len()..newline])
        .map_err(|_| ArtifactError::Corrupt { detail: "the header line is not text".into() })?;
    let fields: Vec<&str> = header.split(' ').collect();
    let version = fields[0];
    if version != FORMAT_VERSION.to_string() {
        let found = if version.is_empty() { "(none)".to_string() } else { version.to_string() };
        return Err(ArtifactError::UnsupportedFormat { found, supported: FORMAT_VERSION });
    }
    let malformed = || ArtifactError::Corrupt { detail: format!("malformed header line {:?}", header) };
    let [_, len, sum] = fields[..] else { return Err(malformed()) };
    let len: usize = len.parse().map_err(|_| malformed())?;
    if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(malformed());
    }
    let body = &bytes[newline + 1..];
    let expected = newline + 1 + len;
    if body.len() < len {
        return Err(ArtifactError::Truncated { expected, got: bytes.len() });
    }
    if body.len() > len {
        return Err(ArtifactError::Corrupt {
            detail: format!("{} unexpected bytes after the {len}-byte body", body.len() - len),
        });
    }
    let actual = sha256_hex(body);
    if actual != sum {
        return Err(ArtifactError::Corrupt {
            detail: format!("the body's checksum is {actual} but the header says {sum}"),
        });
    }
    Ok((FORMAT_VERSION, body))
}

/// An I/O error on `path`, for `map_err`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError {
    let path = path.to_path_buf();
    move |source| ArtifactError::Io { path, source }
}

/// Makes temporary file names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that a reader sees either the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name() else {
        return Err(ArtifactError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
        });
    };
    let (tmp, mut file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            // Left over by a crashed process with the same id: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1_000_000 => continue,
            Err(e) => return Err(io(path)(e)),
        }
    };
    let result = file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(path)).and_then(|()| {
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir).map_err(io(&dir))
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; the rename is as durable as the platform makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Serde for an `f64` as the exact shortest decimal text Rust prints (`"0.001"`, `"1e-8"`,
/// `"inf"`): JSON numbers cannot hold infinities, and parsing them back is not always exact.
pub mod exact_f64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| D::Error::custom(format!("{text:?} is not a number")))
    }
}

/// Serde for an optional `(low, high)` range as `null` or two exact decimal texts.
pub mod exact_range {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<(f64, f64)>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some((lo, hi)) => s.collect_seq([format!("{lo:?}"), format!("{hi:?}")]),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(f64, f64)>, D::Error> {
        let Some([lo, hi]) = Option::<[String; 2]>::deserialize(d)? else { return Ok(None) };
        let num = |t: &str| t.parse::<f64>().map_err(|_| D::Error::custom(format!("{t:?} is not a number")));
        Ok(Some((num(&lo)?, num(&hi)?)))
    }
}
