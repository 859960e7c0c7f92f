//! The text: read from a file or a directory, its distinct characters as the vocabulary, the
//! last tenth held out for validation, and random training windows.

use crate::error::{Error, Result};
use gdc_train_kit::Rng;
use std::path::{Path, PathBuf};

/// Where the default text lives: the licence texts of Debian's base-files package.
pub const DEFAULT_TEXT: &str = "/usr/share/common-licenses";

/// Reads `path`: a file, or every distinct regular file of a directory (symlinks resolved,
/// each target read once), in order of canonical path, each followed by a newline. Returns
/// the text and the files read.
pub fn read_text(path: &Path) -> Result<(String, Vec<PathBuf>)> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if path == Path::new(DEFAULT_TEXT) {
            Error(format!(
                "cannot read the default text {DEFAULT_TEXT} ({e}): it comes with Debian's base-files package; \
                 pass --text FILE_OR_DIRECTORY to train on other text"
            ))
        } else {
            Error(format!("cannot read --text {}: {e}", path.display()))
        }
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
            let canon =
                entry.path().canonicalize().map_err(|e| format!("cannot resolve {}: {e}", entry.path().display()))?;
            if canon.is_file() && !files.contains(&canon) {
                files.push(canon);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut text = String::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        text.push_str(&String::from_utf8_lossy(&bytes));
        text.push('\n');
    }
    if text.chars().count() < 1000 {
        return Err(Error(format!("{} holds under 1000 characters of text: too little to train on", path.display())));
    }
    Ok((text, files))
}

/// A text encoded as character indices, split into training and validation parts.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The distinct characters, sorted; a character's index is its token.
    pub vocab: Vec<char>,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl Corpus {
    /// Encodes `text`; the last `val_fraction` of its characters are the validation part.
    pub fn new(text: &str, val_fraction: f64) -> Corpus {
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let ids: Vec<u32> = text.chars().map(|c| vocab.binary_search(&c).unwrap_or(0) as u32).collect();
        let n_val = ((ids.len() as f64) * val_fraction).round() as usize;
        let cut = ids.len() - n_val.min(ids.len());
        Corpus { vocab, train: ids[..cut].to_vec(), val: ids[cut..].to_vec() }
    }
}

/// `batch` random windows of `ctx + 1` tokens of `data`: the inputs (the first `ctx`) and the
/// targets (shifted by one), each `batch * ctx` long, row after row.
pub fn sample_batch(data: &[u32], rng: &mut Rng, batch: usize, ctx: usize) -> (Vec<u32>, Vec<u32>) {
    let mut inputs = Vec::with_capacity(batch * ctx);
    let mut targets = Vec::with_capacity(batch * ctx);
    for _ in 0..batch {
        let start = rng.below(data.len() - ctx);
        inputs.extend_from_slice(&data[start..start + ctx]);
        targets.extend_from_slice(&data[start + 1..start + ctx + 1]);
    }
    (inputs, targets)
}

/// The starts of the non-overlapping windows of `ctx + 1` tokens that cover `data` (every
/// token but the first is a target once).
pub fn window_starts(data: &[u32], ctx: usize) -> Vec<usize> {
    (0..).map(|i| i * ctx).take_while(|s| s + ctx < data.len()).collect()
}
