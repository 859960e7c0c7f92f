//! Checkpoints of optimizer state as safetensors files: what the optimizer was (program hash,
//! name, parameters, step, hyperparameters, globals) in the `__metadata__` header, and every
//! state tensor as float32 under `"<param>/<state>"`, so state is found by parameter and state
//! name, never by position.
//!
//! Metadata keys, each a string: `gdc.format` (`gdc-checkpoint-3`), `gdc.program_hash`,
//! `gdc.optimizer`, `gdc.step` and `gdc.skipped_steps` (decimal), `gdc.params` (JSON `[["w", [4, 8]], ...]`),
//! `gdc.hypers` (JSON `[["lr", "0.001"], ...]`), `gdc.globals` (JSON
//! `[["mu_product", "0.5"], ...]`), `gdc.file_length` (the file's length in bytes, 20 decimal
//! digits) and `gdc.checksum` (`sha256:` and the 64 hex digits of the SHA-256 of the whole
//! file as written with those 64 digits set to `0`). Floats are written as Rust's shortest
//! round-trip text (`inf`, `NaN` included), so they load back bit for bit. Format 2
//! (`gdc-checkpoint-2`, still read, never written) is format 3 without `gdc.file_length` and
//! `gdc.checksum`; format 1 (`gdc-checkpoint-1`) also differs in `gdc.globals`, a positional
//! list (`["0.5", ...]`): [`Globals::Positional`].
//!
//! Integrity: [`load`] checks a file's length against its header and its checksum before it
//! reads anything else, so a file cut short by a crash or a failed copy is
//! [`CheckpointError::Truncated`] and any changed byte (a flipped bit in the header length, the
//! header's JSON, a metadata value or tensor data) is [`CheckpointError::Corrupt`]; both say to
//! load the previous checkpoint. Format-1 and format-2 files carry no checksum: their length is
//! checked, their bytes cannot be.
//!
//! Because everything is named, a checkpoint can load into an edited program: the migration
//! rule (docs/checkpoints.md) keeps every state whose parameter, name and shape are
//! unchanged, and refuses anything else with a [`CheckpointError::Migration`] that names the
//! parameter and state. [`check_params`] and [`Migration`] are its pieces here; the runtime's
//! `Optimizer::load_checkpoint` applies it. A format-1 file loads only into the program that
//! wrote it ([`check_compatible`]), since its globals have no names.
//!
//! A parameter's name may itself contain `/`: a key splits at its last `/`, and state names
//! may not contain one. A parameter batched by `update(p: [..., rows, cols], g)` keeps one
//! state per matrix, keyed by member name: `"w[0]/buf"`, `"w[1]/buf"`, ... (`gdc.params`
//! lists `w` with its full shape).
//!
//! [`save`] is atomic: it writes a temporary file in the target's directory, syncs it, renames
//! it over the target and syncs the directory, so a failed or interrupted save leaves the
//! previous checkpoint in place. Temporary files are named `.<file>.tmp.<pid>.<n>`; a save
//! removes those of its target left behind by a process that died mid-save (see [`save`]).
//! [`load`] checks everything and never panics on a bad file.

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The value of `gdc.format` this module writes (and reads): with a checksum.
pub const FORMAT: &str = "gdc-checkpoint-3";

/// The previous format, still read: no checksum, so a damaged file is found only when it no
/// longer parses or is shorter than its header says.
pub const FORMAT_2: &str = "gdc-checkpoint-2";

/// The first format, still read: no checksum, and globals by position, so it loads only into the program
/// that wrote it.
pub const FORMAT_1: &str = "gdc-checkpoint-1";

const KEY_FORMAT: &str = "gdc.format";
const KEY_HASH: &str = "gdc.program_hash";
const KEY_OPTIMIZER: &str = "gdc.optimizer";
const KEY_STEP: &str = "gdc.step";
const KEY_SKIPPED: &str = "gdc.skipped_steps";
const KEY_PARAMS: &str = "gdc.params";
const KEY_HYPERS: &str = "gdc.hypers";
const KEY_GLOBALS: &str = "gdc.globals";
const KEY_FILE_LENGTH: &str = "gdc.file_length";
const KEY_CHECKSUM: &str = "gdc.checksum";

/// `gdc.checksum` is this prefix and 64 lowercase hex digits.
const CHECKSUM_PREFIX: &str = "sha256:";
const CHECKSUM_DIGITS: usize = 64;
/// `gdc.file_length` has a fixed width, so the header's length does not depend on it.
const LENGTH_DIGITS: usize = 20;

/// What a checkpoint says about the optimizer that wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// Identifies the compiled program: the same hash means nothing needs migrating.
    pub program_hash: String,
    /// The optimizer's name (`optimizer adamw`), for messages.
    pub optimizer: String,
    /// Bound parameters, name and shape, in binding order.
    pub params: Vec<(String, Vec<usize>)>,
    /// Steps taken.
    pub step: u64,
    /// Steps skipped for a non-finite gradient (`NonFinite::SkipStep`); absent before
    /// format 3 (read as 0).
    pub skipped_steps: u64,
    /// Hyperparameters by name, as in force when saved.
    pub hypers: Vec<(String, f64)>,
    /// The optimizer's global scalars.
    pub globals: Globals,
}

impl CheckpointMeta {
    /// The format [`save`] writes for this metadata: [`FORMAT`], or [`FORMAT_1`] for
    /// positional globals (which [`save`] refuses to write). (A format-2 file loads with named
    /// globals, so its metadata says [`FORMAT`]: saving it again writes format 3.)
    pub fn format(&self) -> &'static str {
        match self.globals {
            Globals::Named(_) => FORMAT,
            Globals::Positional(_) => FORMAT_1,
        }
    }
}

/// A checkpoint's global scalars.
#[derive(Clone, Debug, PartialEq)]
pub enum Globals {
    /// By name, as formats 2 and 3 store them (in the saving program's declaration order).
    Named(Vec<(String, f64)>),
    /// In the saving program's declaration order, without names: read from a format-1 file.
    Positional(Vec<f64>),
}

/// One state tensor of one parameter (`m` of `layer1.w`), as float32.
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
    pub param: String,
    pub state: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl StateTensor {
    /// The tensor's key in the file: `"<param>/<state>"`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.param, self.state)
    }
}

/// How a parameter differs between a checkpoint and the model it is loaded into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamMismatch {
    /// The model has the parameter; the checkpoint holds no state for it.
    NotInCheckpoint,
    /// The checkpoint holds state for a parameter the model does not have.
    NotInModel,
    /// Both have it, in different shapes.
    Shape { checkpoint: Vec<usize>, model: Vec<usize> },
}

impl fmt::Display for ParamMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamMismatch::NotInCheckpoint => write!(f, "is in the model but not in the checkpoint"),
            ParamMismatch::NotInModel => write!(f, "is in the checkpoint but not in the model"),
            ParamMismatch::Shape { checkpoint, model } => {
                write!(f, "has shape {checkpoint:?} in the checkpoint but {model:?} in the model")
            }
        }
    }
}

/// How a checkpoint's state, hyperparameters or globals differ from what the program loading
/// it declares, in a way the migration rule does not allow. Every case says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Migration {
    /// The program uses state `state` for parameter `param` (a member name: `w[3]` for a
    /// matrix of a batched `w`); the checkpoint, saved after a step, holds none. `saved`: the
    /// states it holds for that parameter, by name (a renamed state is among them).
    MissingState { param: String, state: String, saved: Vec<String> },
    /// Both have the state, in different shapes.
    StateShape { param: String, state: String, checkpoint: Vec<usize>, program: Vec<usize> },
    /// The checkpoint holds a state the program does not use for that parameter.
    UnusedState { param: String, state: String },
    /// The checkpoint has a hyperparameter the program does not declare.
    UnknownHyper { name: String },
    /// The checkpoint has a global the program does not declare.
    UnknownGlobal { name: String },
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Migration::MissingState { param, state, saved } => {
                let held = match saved.as_slice() {
                    [] => "none".to_string(),
                    names => names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                };
                write!(
                    f,
                    "parameter `{param}` uses state `{state}`, but the program that saved the checkpoint had no \
                     state `{state}` for it (its states for `{param}`: {held}): a new or renamed state cannot be \
                     migrated; keep the old name, or start from step 0 (do not load the checkpoint)"
                )
            }
            Migration::StateShape { param, state, checkpoint, program } => write!(
                f,
                "state `{state}` of parameter `{param}` has shape {checkpoint:?} in the checkpoint but {program:?} in \
                 this program: a state whose shape changed cannot be migrated; keep its old shape, or start from \
                 step 0 (do not load the checkpoint)"
            ),
            Migration::UnusedState { param, state } => write!(
                f,
                "the checkpoint holds state `{state}` of parameter `{param}`, which this program does not use for it: \
                 a removed or renamed state cannot be migrated; keep the state (under its old name) in the update, \
                 or start from step 0 (do not load the checkpoint)"
            ),
            Migration::UnknownHyper { name } => write!(
                f,
                "the checkpoint sets hyperparameter `{name}`, which this program does not declare: declare it \
                 again (it may go unused), or start from step 0 (do not load the checkpoint)"
            ),
            Migration::UnknownGlobal { name } => write!(
                f,
                "the checkpoint holds global `{name}`, which this program does not declare: declare it again \
                 (it may go unused), or start from step 0 (do not load the checkpoint)"
            ),
        }
    }
}

/// Everything that can go wrong saving, loading or matching a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing, syncing or renaming failed (`op` says which, e.g. "cannot read").
    #[error("{op} checkpoint {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is shorter than its header says: the save (or a copy of the file) was cut
    /// short. `expected`: the length the header gives (when the file ends inside the header,
    /// where the header ends: the file needs at least that many bytes).
    #[error(
        "{} is cut short: the file is {found} bytes but its header needs {expected}; the save (or a copy of \
         the file) did not finish: load the previous checkpoint (or copy the file again)",
        path.display()
    )]
    Truncated { path: PathBuf, expected: u64, found: u64 },
    /// The file's bytes changed after it was written: its checksum does not match, its header
    /// does not parse, or its length field, header and size disagree in a way no truncation
    /// explains. `reason` says which.
    #[error(
        "{} is corrupt: {reason}; the file changed after it was saved (a disk, memory or copy error): load \
         the previous checkpoint (or copy the file again from a good copy)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    /// The bytes are not a safetensors file (a format-1 or format-2 checkpoint, which has no
    /// checksum, or another program's file, damaged where its length still fits).
    #[error("{} is damaged or not a safetensors file ({reason})", path.display())]
    NotSafetensors { path: PathBuf, reason: String },
    /// A safetensors file whose `gdc.format` is not `gdc-checkpoint-3`, `-2` or `-1`.
    #[error(
        "{} is a safetensors file but not a gdc checkpoint: {}",
        path.display(),
        match found { None => format!("it has no `{KEY_FORMAT}` metadata"), Some(f) => format!("its `{KEY_FORMAT}` is `{f}`, expected `{FORMAT}` (or `{FORMAT_2}`, `{FORMAT_1}`)") }
    )]
    NotCheckpoint { path: PathBuf, found: Option<String> },
    /// A metadata entry is missing or cannot be parsed.
    #[error("{}: malformed checkpoint metadata `{key}`: {reason}", path.display())]
    Metadata { path: PathBuf, key: String, reason: String },
    /// A tensor key that is not `"<param>/<state>"` with both parts non-empty.
    #[error("{}: tensor `{key}` is not named `<param>/<state>`", path.display())]
    TensorKey { path: PathBuf, key: String },
    /// Two tensors with the same key.
    #[error("{}: tensor `{key}` appears twice", path.display())]
    DuplicateTensor { path: PathBuf, key: String },
    /// A tensor for a parameter the checkpoint's `gdc.params` does not list.
    #[error("{}: tensor `{key}` belongs to parameter `{param}`, which the checkpoint's parameters do not list", path.display())]
    UnknownParam { path: PathBuf, key: String, param: String },
    /// A tensor that is not float32.
    #[error("{}: tensor `{key}` has dtype {dtype}, but gdc checkpoints hold F32 tensors only", path.display())]
    Dtype { path: PathBuf, key: String, dtype: String },
    /// A tensor whose data does not hold exactly the values its shape says.
    #[error("{}: tensor `{key}` has shape {shape:?} ({expected} values) but holds {found} bytes of data", path.display(), expected = shape.iter().product::<usize>())]
    TensorSize { path: PathBuf, key: String, shape: Vec<usize>, found: usize },
    /// A format-1 checkpoint (positional globals) written by a different optimizer program.
    #[error(
        "the checkpoint was written by another program: optimizer `{saved_optimizer}` (program hash {saved_hash}), \
         but this is optimizer `{optimizer}` (program hash {hash}); a `{FORMAT_1}` file loads only into the program \
         that wrote it: load it with that program (and save it again to get a `{FORMAT}` file, which can migrate), \
         or start from fresh state"
    )]
    ProgramMismatch { saved_optimizer: String, saved_hash: String, optimizer: String, hash: String },
    /// The parameters differ, by name or shape.
    #[error(
        "parameter `{param}` {mismatch}; a checkpoint loads only into a model with the same parameter names and shapes"
    )]
    ParamMismatch { param: String, mismatch: ParamMismatch },
    /// The checkpoint's state, hyperparameters or globals do not fit the loading program by
    /// the migration rule (boxed: it is the largest case).
    #[error("{}: the checkpoint of optimizer `{saved_optimizer}` does not fit optimizer `{optimizer}`: {mismatch}", path.display())]
    Migration { path: PathBuf, saved_optimizer: String, optimizer: String, mismatch: Box<Migration> },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io { op, path: path.to_path_buf(), source }
}

/// A state tensor as a safetensors view: float32, little-endian.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

fn float_text(x: f64) -> String {
    // Display is the shortest text that parses back to the same f64; NaN keeps no payload.
    x.to_string()
}

fn encode_meta(meta: &CheckpointMeta) -> HashMap<String, String> {
    let params: Vec<serde_json::Value> = meta.params.iter().map(|(n, s)| serde_json::json!([n, s])).collect();
    let hypers: Vec<serde_json::Value> =
        meta.hypers.iter().map(|(n, v)| serde_json::json!([n, float_text(*v)])).collect();
    let globals: Vec<serde_json::Value> = match &meta.globals {
        Globals::Named(g) => g.iter().map(|(n, v)| serde_json::json!([n, float_text(*v)])).collect(),
        Globals::Positional(g) => g.iter().map(|v| serde_json::json!(float_text(*v))).collect(),
    };
    HashMap::from([
        (KEY_FORMAT.to_string(), meta.format().to_string()),
        (KEY_HASH.to_string(), meta.program_hash.clone()),
        (KEY_OPTIMIZER.to_string(), meta.optimizer.clone()),
        (KEY_STEP.to_string(), meta.step.to_string()),
        (KEY_SKIPPED.to_string(), meta.skipped_steps.to_string()),
        (KEY_PARAMS.to_string(), serde_json::Value::from(params).to_string()),
        (KEY_HYPERS.to_string(), serde_json::Value::from(hypers).to_string()),
        (KEY_GLOBALS.to_string(), serde_json::Value::from(globals).to_string()),
    ])
}

/// The listed parameter a tensor's parameter name belongs to: the name itself, or `w` for
/// `w[3]`, matrix 3 of a parameter `w` batched by `update(p: [..., rows, cols], g)` (then
/// with its index).
fn owner(name: &str, listed: impl Fn(&str) -> bool) -> Option<(&str, Option<usize>)> {
    if listed(name) {
        return Some((name, None));
    }
    let (p, i) = name.strip_suffix(']')?.rsplit_once('[')?;
    let i = i.parse().ok().filter(|_| i.bytes().all(|b| b.is_ascii_digit()))?;
    listed(p).then_some((p, Some(i)))
}

/// Checks the tensors against each other and the metadata; shared by save and load.
fn check_tensors(path: &Path, meta: &CheckpointMeta, tensors: &[StateTensor]) -> Result<(), CheckpointError> {
    let params: HashSet<&str> = meta.params.iter().map(|(n, _)| n.as_str()).collect();
    let mut keys = HashSet::new();
    for t in tensors {
        let key = t.key();
        if t.param.is_empty() || t.state.is_empty() || t.state.contains('/') {
            return Err(CheckpointError::TensorKey { path: path.to_path_buf(), key });
        }
        if owner(&t.param, |p| params.contains(p)).is_none() {
            return Err(CheckpointError::UnknownParam { path: path.to_path_buf(), key, param: t.param.clone() });
        }
        let numel = t.shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        if numel != Some(t.data.len()) {
            let found = t.data.len().saturating_mul(4);
            return Err(CheckpointError::TensorSize { path: path.to_path_buf(), key, shape: t.shape.clone(), found });
        }
        if !keys.insert(key.clone()) {
            return Err(CheckpointError::DuplicateTensor { path: path.to_path_buf(), key });
        }
    }
    Ok(())
}

fn check_meta(path: &Path, meta: &CheckpointMeta) -> Result<(), CheckpointError> {
    let bad =
        |key: &str, reason: String| CheckpointError::Metadata { path: path.to_path_buf(), key: key.into(), reason };
    let mut seen = HashSet::new();
    for (name, _) in &meta.params {
        if name.is_empty() {
            return Err(bad(KEY_PARAMS, "a parameter has an empty name".into()));
        }
        if !seen.insert(name.as_str()) {
            return Err(bad(KEY_PARAMS, format!("parameter `{name}` appears twice")));
        }
    }
    let mut seen = HashSet::new();
    for (name, _) in &meta.hypers {
        if !seen.insert(name.as_str()) {
            return Err(bad(KEY_HYPERS, format!("hyperparameter `{name}` appears twice")));
        }
    }
    if let Globals::Named(globals) = &meta.globals {
        let mut seen = HashSet::new();
        for (name, _) in globals {
            if !seen.insert(name.as_str()) {
                return Err(bad(KEY_GLOBALS, format!("global `{name}` appears twice")));
            }
        }
    }
    Ok(())
}

/// The temporary files of this process's saves now under way: a save removes any other
/// temporary file of its target's naming pattern with this process's id (left behind by an
/// earlier process that had the same id), but never one of these.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the temporary file unless the save got as far as renaming it, and unregisters it.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
        in_flight().retain(|p| p != &self.path);
    }
}

/// The prefix of the temporary files of saves to `file_name`: `.<file_name>.tmp.`, followed by
/// `<pid>.<n>`.
fn temp_prefix(file_name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp.");
    prefix
}

/// Whether process `pid` may still be running (and so may still be writing its temporary
/// file). Only Linux's `/proc` says for sure; elsewhere every other process counts as alive.
fn may_be_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Removes the temporary files a save to `dir/file_name` left behind when its process died
/// mid-save (killed, out of memory, power lost): `.<file_name>.tmp.<pid>.<n>` where process
/// `pid` is gone, or is this process but the file is none of its saves under way. Each is as
/// large as a checkpoint, so a training run killed and resumed many times would otherwise
/// fill the disk. Best effort: a file that cannot be listed or removed is left.
fn remove_stale_temps(dir: &Path, file_name: &std::ffi::OsStr) {
    let (Some(prefix), Ok(listing)) = (temp_prefix(file_name).to_str().map(String::from), fs::read_dir(dir)) else {
        return;
    };
    let me = std::process::id();
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some((pid, n)) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|r| r.split_once('.')) else {
            continue;
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let Some(pid) = pid.parse::<u32>().ok().filter(|_| digits(pid) && digits(n)) else { continue };
        let path = dir.join(&name);
        let stale = if pid == me { !in_flight().contains(&path) } else { !may_be_alive(pid) };
        if stale {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The byte range of the value of metadata entry `key` in a serialized header (the JSON
/// between the file's first 8 bytes and its data), which starts with `prefix`: the text
/// after `"key":"prefix`. `None` unless it occurs exactly once. (A quote inside a JSON string
/// is escaped, so `"key":"` occurs nowhere but as that entry.)
fn value_range(header: &[u8], key: &str, prefix: &str, len: usize) -> Option<std::ops::Range<usize>> {
    let pattern = format!("\"{key}\":\"{prefix}");
    let pattern = pattern.as_bytes();
    let mut found = header.windows(pattern.len()).enumerate().filter(|(_, w)| *w == pattern).map(|(i, _)| i);
    let start = found.next()? + pattern.len();
    if found.next().is_some() || header.get(start..start + len + 1)?.last() != Some(&b'"') {
        return None;
    }
    Some(start..start + len)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes` with `digits` (the checksum's own digits) read as `0`s.
fn file_checksum(bytes: &[u8], digits: std::ops::Range<usize>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(&bytes[..digits.start]);
    hasher.update([b'0'; CHECKSUM_DIGITS]);
    hasher.update(&bytes[digits.end..]);
    hex(&hasher.finalize())
}

/// Writes a checkpoint to `path`, atomically: either `path` holds the new checkpoint
/// afterwards, or it holds what it held before (and no temporary file is left behind, unless
/// the process dies mid-save). It writes [`FORMAT`], with its length and checksum: metadata
/// with [`Globals::Positional`] is refused.
///
/// First it removes the temporary files of earlier saves to `path` whose process died
/// mid-save ([`remove_stale_temps`]: on Linux, those of processes that are gone; elsewhere
/// only those of an earlier process with this one's id). It assumes one machine writes a
/// given checkpoint path (on a shared file system another machine's process ids mean nothing
/// here).
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[StateTensor]) -> Result<(), CheckpointError> {
    if let Globals::Positional(_) = meta.globals {
        return Err(CheckpointError::Metadata {
            path: path.to_path_buf(),
            key: KEY_GLOBALS.into(),
            reason: format!("positional globals are `{FORMAT_1}`, which is read but not written; name them"),
        });
    }
    check_meta(path, meta)?;
    check_tensors(path, meta, tensors)?;
    let internal =
        |reason: String| CheckpointError::Metadata { path: path.to_path_buf(), key: "__metadata__".into(), reason };
    let mut md = encode_meta(meta);
    md.insert(KEY_FILE_LENGTH.into(), "0".repeat(LENGTH_DIGITS));
    md.insert(KEY_CHECKSUM.into(), format!("{CHECKSUM_PREFIX}{}", "0".repeat(CHECKSUM_DIGITS)));
    let views = tensors.iter().map(|t| (t.key(), F32View { shape: &t.shape, data: &t.data }));
    let mut bytes = safetensors::serialize(views, Some(md)).map_err(|e| internal(format!("cannot serialize: {e}")))?;
    // Fill in the length and then the checksum, in place: both have a fixed width.
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = 8..8 + n;
    let missing = |key: &str| internal(format!("`{key}` not found once in the serialized header"));
    let length = value_range(&bytes[header.clone()], KEY_FILE_LENGTH, "", LENGTH_DIGITS)
        .ok_or_else(|| missing(KEY_FILE_LENGTH))?;
    let total = format!("{:0width$}", bytes.len(), width = LENGTH_DIGITS);
    bytes[8 + length.start..8 + length.end].copy_from_slice(total.as_bytes());
    let digits = value_range(&bytes[header], KEY_CHECKSUM, CHECKSUM_PREFIX, CHECKSUM_DIGITS)
        .ok_or_else(|| missing(KEY_CHECKSUM))?;
    let digits = 8 + digits.start..8 + digits.end;
    let sum = file_checksum(&bytes, digits.clone());
    bytes[digits].copy_from_slice(sum.as_bytes());

    let Some(file_name) = path.file_name() else {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file");
        return Err(CheckpointError::Io { op: "cannot write", path: path.to_path_buf(), source });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    remove_stale_temps(dir, file_name);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // A name no save of this process uses; one already taken (left by a dead process with
    // this id that the clean-up could not remove) is skipped.
    let mut attempts = 0;
    let (mut file, mut tmp) = loop {
        let mut tmp_name = temp_prefix(file_name);
        tmp_name.push(format!("{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let tmp_path = dir.join(tmp_name);
        in_flight().push(tmp_path.clone());
        let tmp = TempFile { path: tmp_path, armed: false };
        match OpenOptions::new().write(true).create_new(true).open(&tmp.path) {
            Ok(file) => break (file, tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            Err(e) => return Err(io_err("cannot create a temporary file for", path)(e)),
        }
    };
    tmp.armed = true;
    file.write_all(&bytes).map_err(io_err("cannot write", path))?;
    file.sync_all().map_err(io_err("cannot sync", path))?;
    drop(file);
    fs::rename(&tmp.path, path).map_err(io_err("cannot rename the temporary file over", path))?;
    tmp.armed = false;
    drop(tmp);
    sync_dir(dir).map_err(io_err("cannot sync the directory of", path))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; the rename is as durable as it gets.
    Ok(())
}

/// Reads a checkpoint of [`FORMAT`], [`FORMAT_2`] or [`FORMAT_1`] (whose globals come back as
/// [`Globals::Positional`]), after [`check_integrity`]. Tensors come back ordered by their parameter's place in
/// `meta.params`, then by state name.
pub fn load(path: &Path) -> Result<(CheckpointMeta, Vec<StateTensor>), CheckpointError> {
    let bytes = fs::read(path).map_err(io_err("cannot read", path))?;
    check_integrity(path, &bytes)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| deserialize_error(path, &bytes, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| deserialize_error(path, &bytes, e))?;
    let empty = HashMap::new();
    let md = header.metadata().as_ref().unwrap_or(&empty);
    let named_globals = match md.get(KEY_FORMAT) {
        Some(f) if f == FORMAT || f == FORMAT_2 => true,
        Some(f) if f == FORMAT_1 => false,
        found => return Err(CheckpointError::NotCheckpoint { path: path.to_path_buf(), found: found.cloned() }),
    };
    let meta = decode_meta(path, md, named_globals)?;
    check_meta(path, &meta)?;

    let mut tensors = Vec::with_capacity(st.len());
    for (key, view) in st.iter() {
        let Some((param, state)) = key.rsplit_once('/') else {
            return Err(CheckpointError::TensorKey { path: path.to_path_buf(), key: key.into() });
        };
        if view.dtype() != Dtype::F32 {
            let dtype = view.dtype().to_string();
            return Err(CheckpointError::Dtype { path: path.to_path_buf(), key: key.into(), dtype });
        }
        let raw = view.data();
        let numel = view.shape().iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        if numel.and_then(|n| n.checked_mul(4)) != Some(raw.len()) {
            let shape = view.shape().to_vec();
            return Err(CheckpointError::TensorSize {
                path: path.to_path_buf(),
                key: key.into(),
                shape,
                found: raw.len(),
            });
        }
        let data = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.push(StateTensor { param: param.into(), state: state.into(), shape: view.shape().to_vec(), data });
    }
    check_tensors(path, &meta, &tensors)?;
    let order: HashMap<&str, usize> = meta.params.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    // `check_tensors` found every tensor's parameter.
    let rank = |t: &StateTensor| {
        let (p, member) = owner(&t.param, |p| order.contains_key(p)).unwrap_or((&t.param, None));
        (order.get(p).copied().unwrap_or(usize::MAX), member)
    };
    tensors.sort_by(|a, b| (rank(a), &a.state).cmp(&(rank(b), &b.state)));
    Ok((meta, tensors))
}

/// What the integrity check reads from a parsed header: the data's length (the largest
/// `data_offsets` end), and `gdc.file_length` if present.
struct HeaderFacts {
    data_len: u64,
    file_length: Option<u64>,
}

impl HeaderFacts {
    /// `None` if the header is not a JSON object.
    fn of(header: &serde_json::Value) -> Option<HeaderFacts> {
        let object = header.as_object()?;
        let md = object.get("__metadata__").and_then(|m| m.as_object());
        let text = |key: &str| md.and_then(|m| m.get(key)).and_then(|v| v.as_str()).map(String::from);
        let data_len = object
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .filter_map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
            .max()
            .unwrap_or(0);
        Some(HeaderFacts { data_len, file_length: text(KEY_FILE_LENGTH).and_then(|t| t.parse().ok()) })
    }
}

/// Checks the file's length against its header, and its checksum where it has one, before
/// anything else reads it: a file shorter than its header says is
/// [`CheckpointError::Truncated`]; one whose bytes changed is [`CheckpointError::Corrupt`].
///
/// A cut file is a prefix of a good one, so its length field and header are intact as far as
/// they go: it ends inside the JSON (which then does not parse to its end), or after it,
/// short of `8 + header + data` bytes (with format 3, exactly `gdc.file_length`). Anything
/// else that does not add up (a header that is not JSON, a length field that disagrees with
/// the header after it, bytes past the data) is a change, not a cut, as is a checksum that
/// does not match.
pub fn check_integrity(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let found = bytes.len() as u64;
    let truncated = |expected: u64| CheckpointError::Truncated { path: path.to_path_buf(), expected, found };
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
    let Some(length_field) = bytes.get(..8) else { return Err(truncated(8)) };
    let n = u64::from_le_bytes(length_field.try_into().expect("8 bytes"));
    let header_end = n.saturating_add(8);
    if header_end > found {
        // The length field points past the end: the file was cut inside the header, or after
        // a complete JSON header inside its padding, or the field itself changed.
        let mut values = serde_json::Deserializer::from_slice(&bytes[8..]).into_iter::<serde_json::Value>();
        let parsed = values.next();
        let json_end = 8 + values.byte_offset() as u64;
        return Err(match parsed {
            None => truncated(header_end),
            Some(Err(e)) if e.is_eof() => truncated(header_end),
            Some(Err(e)) => corrupt(format!("its header is not valid JSON ({e})")),
            Some(Ok(value)) => match HeaderFacts::of(&value) {
                // Cut in the padding after the JSON: the length field, the data's length and
                // (format 3) the recorded file length agree, and only spaces follow the JSON.
                Some(facts)
                    if bytes[json_end as usize..].iter().all(|b| *b == b' ')
                        && facts.file_length.is_none_or(|l| Some(l) == header_end.checked_add(facts.data_len)) =>
                {
                    truncated(header_end.saturating_add(facts.data_len))
                }
                _ => corrupt(format!(
                    "its first 8 bytes say the header is {n} bytes, past the end of the {found}-byte file, but a \
                     complete header ends at byte {json_end}"
                )),
            },
        });
    }
    let header = &bytes[8..header_end as usize];
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| corrupt(format!("its {n}-byte header is not valid JSON ({e})")))?;
    let Some(facts) = HeaderFacts::of(&value) else {
        return Err(corrupt("its header is not a JSON object".into()));
    };
    let expected = header_end.saturating_add(facts.data_len);
    if found < expected {
        return Err(match facts.file_length {
            Some(l) if l != expected => corrupt(format!(
                "its header places the end of the data at byte {expected} but records a file of {l} bytes (the \
                 file has {found})"
            )),
            _ => truncated(expected),
        });
    }
    if found > expected {
        return Err(corrupt(format!(
            "it has {} bytes past the end of the data its header describes ({expected} bytes)",
            found - expected
        )));
    }
    // Found in the raw bytes, not through the parsed JSON: a flip in `__metadata__` must not
    // hide the checksum.
    let Some(at) = value_range(header, KEY_CHECKSUM, CHECKSUM_PREFIX, CHECKSUM_DIGITS) else {
        let claims = |text: &str| header.windows(text.len()).any(|w| w == text.as_bytes());
        if claims(FORMAT) || claims(KEY_CHECKSUM) || claims(KEY_FILE_LENGTH) {
            return Err(corrupt(format!(
                "it is a `{FORMAT}` file, but `{KEY_CHECKSUM}` is missing or not `{CHECKSUM_PREFIX}` and 64 hex digits"
            )));
        }
        // Formats 1 and 2 (and other programs' files) carry no checksum.
        return Ok(());
    };
    // Lowercase only: the file is checked byte for byte.
    let lower_hex = |d: &&str| d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let Some(digits) = std::str::from_utf8(&header[at.clone()]).ok().filter(lower_hex) else {
        return Err(corrupt(format!("`{KEY_CHECKSUM}` is not `{CHECKSUM_PREFIX}` and 64 hex digits")));
    };
    let actual = file_checksum(bytes, 8 + at.start..8 + at.end);
    if actual != digits {
        return Err(corrupt(format!("its SHA-256 is {actual}, but `{KEY_CHECKSUM}` records {digits}")));
    }
    match facts.file_length {
        Some(l) if l == found => Ok(()),
        // Covered by the checksum, so only a writer other than `save` gets here.
        l => Err(corrupt(format!("`{KEY_FILE_LENGTH}` is {l:?}, but the file has {found} bytes"))),
    }
}

/// Turns a safetensors error into ours, naming the tensor when its data does not fit its shape.
fn deserialize_error(path: &Path, bytes: &[u8], e: SafeTensorError) -> CheckpointError {
    if matches!(e, SafeTensorError::TensorInvalidInfo) {
        if let Some((key, shape, found)) = misfit_tensor(bytes) {
            return CheckpointError::TensorSize { path: path.to_path_buf(), key, shape, found };
        }
    }
    CheckpointError::NotSafetensors { path: path.to_path_buf(), reason: e.to_string() }
}

/// The first tensor in a parseable header whose byte range does not match its dtype and shape.
fn misfit_tensor(bytes: &[u8]) -> Option<(String, Vec<usize>, usize)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    for (key, info) in header.as_object()? {
        if key == "__metadata__" {
            continue;
        }
        let dtype: Dtype = serde_json::from_value(info.get("dtype")?.clone()).ok()?;
        let shape: Vec<usize> = serde_json::from_value(info.get("shape")?.clone()).ok()?;
        let offsets: (usize, usize) = serde_json::from_value(info.get("data_offsets")?.clone()).ok()?;
        let found = offsets.1.checked_sub(offsets.0)?;
        let bits = shape.iter().try_fold(dtype.bitsize(), |a, d| a.checked_mul(*d));
        if bits != found.checked_mul(8) {
            return Some((key.clone(), shape, found));
        }
    }
    None
}

fn decode_meta(
    path: &Path,
    md: &HashMap<String, String>,
    named_globals: bool,
) -> Result<CheckpointMeta, CheckpointError> {
    let bad =
        |key: &str, reason: String| CheckpointError::Metadata { path: path.to_path_buf(), key: key.into(), reason };
    let get = |key: &str| md.get(key).ok_or_else(|| bad(key, "missing".into()));
    let json = |key: &str| -> Result<serde_json::Value, CheckpointError> {
        serde_json::from_str(get(key)?).map_err(|e| bad(key, format!("not JSON: {e}")))
    };
    let float = |key: &str, v: &serde_json::Value| -> Result<f64, CheckpointError> {
        let text = v.as_str().ok_or_else(|| bad(key, format!("expected a number as a string, found {v}")))?;
        text.parse().map_err(|_| bad(key, format!("`{text}` is not a number")))
    };

    let step_text = get(KEY_STEP)?;
    let step = step_text.parse().map_err(|_| bad(KEY_STEP, format!("`{step_text}` is not a step count")))?;
    let skipped_steps = match md.get(KEY_SKIPPED) {
        None => 0,
        Some(t) => t.parse().map_err(|_| bad(KEY_SKIPPED, format!("`{t}` is not a step count")))?,
    };

    let params_json = json(KEY_PARAMS)?;
    let entries = params_json.as_array().ok_or_else(|| bad(KEY_PARAMS, "expected a list".into()))?;
    let mut params = Vec::with_capacity(entries.len());
    for entry in entries {
        let parsed = entry.as_array().filter(|a| a.len() == 2).and_then(|a| {
            let name = a[0].as_str()?.to_string();
            let shape = a[1].as_array()?.iter().map(|d| usize::try_from(d.as_u64()?).ok()).collect::<Option<_>>()?;
            Some((name, shape))
        });
        params.push(parsed.ok_or_else(|| bad(KEY_PARAMS, format!("expected [name, [dims...]], found {entry}")))?);
    }

    // `[["name", "value"], ...]`: hyperparameters, and globals from format 2 on.
    let named = |key: &str| -> Result<Vec<(String, f64)>, CheckpointError> {
        let list = json(key)?;
        let entries = list.as_array().ok_or_else(|| bad(key, "expected a list".into()))?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let pair = entry.as_array().filter(|a| a.len() == 2);
            let (name, value) = pair
                .and_then(|a| Some((a[0].as_str()?, &a[1])))
                .ok_or_else(|| bad(key, format!("expected [name, value], found {entry}")))?;
            out.push((name.to_string(), float(key, value)?));
        }
        Ok(out)
    };
    let hypers = named(KEY_HYPERS)?;
    let globals = if named_globals {
        Globals::Named(named(KEY_GLOBALS)?)
    } else {
        let globals_json = json(KEY_GLOBALS)?;
        let entries = globals_json.as_array().ok_or_else(|| bad(KEY_GLOBALS, "expected a list".into()))?;
        Globals::Positional(entries.iter().map(|v| float(KEY_GLOBALS, v)).collect::<Result<_, _>>()?)
    };

    Ok(CheckpointMeta {
        program_hash: get(KEY_HASH)?.clone(),
        optimizer: get(KEY_OPTIMIZER)?.clone(),
        params,
        step,
        skipped_steps,
        hypers,
        globals,
    })
}

/// Checks that a checkpoint fits the program and parameters it is about to be loaded into
/// without migrating: the same program (by hash), and the same parameters as
/// [`check_params`] checks them. The first difference is the error. Format-1 files must pass
/// it; format-2 and format-3 files need only [`check_params`] and the migration rule.
pub fn check_compatible(
    meta: &CheckpointMeta,
    program_hash: &str,
    optimizer: &str,
    params: &[(String, Vec<usize>)],
) -> Result<(), CheckpointError> {
    if meta.program_hash != program_hash {
        return Err(CheckpointError::ProgramMismatch {
            saved_optimizer: meta.optimizer.clone(),
            saved_hash: meta.program_hash.clone(),
            optimizer: optimizer.to_string(),
            hash: program_hash.to_string(),
        });
    }
    check_params(meta, params)
}

/// Checks that a checkpoint holds the same parameters as `params` (the model's, name and
/// shape), as a set: their order may differ. The first difference is the error.
pub fn check_params(meta: &CheckpointMeta, params: &[(String, Vec<usize>)]) -> Result<(), CheckpointError> {
    let saved: HashMap<&str, &Vec<usize>> = meta.params.iter().map(|(n, s)| (n.as_str(), s)).collect();
    for (name, shape) in params {
        match saved.get(name.as_str()) {
            None => {
                return Err(CheckpointError::ParamMismatch {
                    param: name.clone(),
                    mismatch: ParamMismatch::NotInCheckpoint,
                })
            }
            Some(s) if *s != shape => {
                let mismatch = ParamMismatch::Shape { checkpoint: s.to_vec(), model: shape.clone() };
                return Err(CheckpointError::ParamMismatch { param: name.clone(), mismatch });
            }
            Some(_) => {}
        }
    }
    let model: HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((name, _)) = meta.params.iter().find(|(n, _)| !model.contains(n.as_str())) {
        return Err(CheckpointError::ParamMismatch { param: name.clone(), mismatch: ParamMismatch::NotInModel });
    }
    Ok(())
}

/// The shape state `declared` of a bound member has in a checkpoint: the member's shape for
/// state shaped like the parameter, otherwise the declared dimensions sized for the member
/// (`[]` for a scalar). Saving writes it; the migration rule compares it.
pub(crate) fn state_shape(
    declared: &gdc_dsl::types::Shape,
    member_shape: &[usize],
    bound: &gdc_compiler::interp::BoundParam,
) -> Vec<usize> {
    use gdc_compiler::interp;
    match declared {
        gdc_dsl::types::Shape::Like => member_shape.to_vec(),
        declared => interp::names_of(declared).iter().map(|n| interp::size_of(n, bound)).collect(),
    }
}
