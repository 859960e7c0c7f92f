//! Robustness: the front end never panics and always keeps its contract (an AST exactly when
//! there is no error), whatever it is fed. Inputs: every prefix of every example optimizer
//! and diagnostic test file, then seeded random mutations of them, then pathologically deep
//! nesting. A panic is reported with the input that caused it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// The `.gd` files of a directory relative to this crate, sorted by name.
fn gd_files(dir: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gd"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable .gd file");
            (path.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}

fn corpus() -> Vec<(String, String)> {
    let mut files = gd_files("../examples/optimizers");
    files.extend(gd_files("tests/diagnostics"));
    assert!(files.len() > 20, "expected the examples and the diagnostic tests");
    files
}

/// Runs the front end and the renderer on `src`; describes the failure, with the input.
fn check_one(what: &str, src: &str) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let (file, diags) = gdc_dsl::front_end(src);
        let rendered = gdc_dsl::render(&diags, "input.gd", src);
        (file.is_some(), diags, rendered)
    }));
    let (has_ast, diags, rendered) = match outcome {
        Ok(result) => result,
        Err(_) => return Err(format!("{what}: the front end panicked on this input:\n{src}")),
    };
    let has_error = diags.iter().any(|d| d.is_error());
    if has_ast == has_error {
        return Err(format!(
            "{what}: an AST must come back exactly when there is no error (AST: {has_ast}, \
             errors: {has_error}) for this input:\n{src}\n--- diagnostics ---\n{rendered}"
        ));
    }
    if let Some(d) = diags.iter().find(|d| d.span.start > d.span.end || d.span.end as usize > src.len()) {
        return Err(format!("{what}: {} has span {:?} outside the input:\n{src}", d.code, d.span));
    }
    Ok(())
}

/// Fails the test with the first few failures.
fn report(failures: Vec<String>) {
    let shown: Vec<&String> = failures.iter().take(3).collect();
    assert!(
        failures.is_empty(),
        "{} inputs failed; the first ones:\n\n{}",
        failures.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
    );
}

#[test]
fn every_prefix() {
    let mut failures = Vec::new();
    for (name, text) in corpus() {
        for (end, _) in text.char_indices().chain([(text.len(), ' ')]) {
            if let Err(e) = check_one(&format!("{name}, first {end} bytes"), &text[..end]) {
                failures.push(e);
            }
        }
    }
    report(failures);
}

/// xorshift64*: small, fast and fully determined by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A range `a..b` inside `0..=len`.
    fn range(&mut self, len: usize) -> (usize, usize) {
        let a = self.below(len + 1);
        let b = a + self.below(len - a + 1).min(1 + self.below(24));
        (a, b)
    }
}

/// Tokens and symbols of the language (and a few it lacks), to splice into inputs.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "@",
    ".T",
    ".",
    "..",
    "..=",
    "->",
    "+=",
    "-=",
    "*=",
    "/=",
    "let",
    "var",
    "every",
    "for",
    "in",
    "if",
    "else",
    "fn",
    "return",
    "hyper",
    "state",
    "global",
    "prepare",
    "update",
    "optimizer",
    "zeros",
    "eye",
    "p",
    "g",
    "step",
    "rows",
    "cols",
    "numel",
    "fan_in",
    "sum",
    "norm",
    "sqrt",
    "where",
    "lerp",
    "axis",
    "axis = 1",
    "f32",
    "int",
    "bool",
    "tensor",
    "true",
    "false",
    "[rows, cols]",
    "[rows]",
    "[]",
    "0",
    "1",
    "-1",
    "2.5",
    "1e99",
    "1e999",
    "1e-8",
    ".5",
    "_",
    "x",
    "lr",
    "m",
    "// c\n",
    "\n",
    " ",
    "\t",
    "é",
    "−",
    "€",
];

/// One random edit of `text`, on char boundaries.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let len = chars.len();
    match rng.below(6) {
        0 => {
            let (a, b) = rng.range(len);
            chars.drain(a..b);
        }
        1 => {
            let (a, b) = rng.range(len);
            let copy: Vec<char> = chars[a..b].to_vec();
            let at = rng.below(len + 1);
            chars.splice(at..at, copy);
        }
        2 | 3 => {
            let token = TOKENS[rng.below(TOKENS.len())];
            let at = rng.below(len + 1);
            chars.splice(at..at, token.chars());
        }
        4 => {
            // Swap two ranges: cut both out and put each where the other was.
            let (a, b) = rng.range(len);
            let (c, d) = rng.range(len);
            let ((a, b), (c, d)) = if a <= c { ((a, b), (c, d)) } else { ((c, d), (a, b)) };
            if b <= c {
                let first: Vec<char> = chars[a..b].to_vec();
                let second: Vec<char> = chars[c..d].to_vec();
                chars.splice(c..d, first);
                chars.splice(a..b, second);
            }
        }
        _ => {
            if len > 0 {
                let at = rng.below(len);
                chars[at] = char::from(b' ' + rng.below(95) as u8);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn seeded_mutations() {
    const MUTANTS: usize = 30_000;
    let corpus = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    for i in 0..MUTANTS {
        let (name, text) = &corpus[rng.below(corpus.len())];
        let mut src = mutate(&mut rng, text);
        // Some inputs take several edits, so errors combine.
        for _ in 0..rng.below(4) {
            src = mutate(&mut rng, &src);
        }
        if let Err(e) = check_one(&format!("mutant {i} of {name}"), &src) {
            failures.push(e);
        }
    }
    report(failures);
}

/// Input nested far beyond any real optimizer is an error, not a stack overflow.
#[test]
fn deep_nesting_is_an_error() {
    let update = |body: String| format!("optimizer o {{\n  update(p, g) {{\n    {body}\n  }}\n}}\n");
    let n = 5000;
    let cases = [
        ("a long sum", update(format!("p = {}", vec!["g"; n].join(" + ")))),
        ("nested parentheses", update(format!("p = {}g{}", "(".repeat(n), ")".repeat(n)))),
        ("nested calls", update(format!("p = {}g{}", "sqrt(".repeat(n), ")".repeat(n)))),
        ("repeated negation", update(format!("p = {}g", "-".repeat(n)))),
        ("a power tower", update(format!("p = {}", vec!["g"; n].join(" ^ ")))),
        ("repeated transposes", update(format!("p = g{}", ".T".repeat(n)))),
        ("nested ifs", update(format!("{}p = g{}", "if true { ".repeat(n), " }".repeat(n)))),
    ];
    let mut failures = Vec::new();
    for (what, src) in &cases {
        match check_one(what, src) {
            Err(e) => failures.push(e),
            Ok(()) => {
                let (_, diags) = gdc_dsl::front_end(src);
                if !diags.iter().any(|d| d.code == "E0001") {
                    failures.push(format!("{what}: expected E0001, got {diags:?}"));
                }
            }
        }
    }
    // Nesting of a sensible depth still works.
    let fine = update(format!("p = {}g{}", "(".repeat(100), ")".repeat(100)));
    let (file, diags) = gdc_dsl::front_end(&fine);
    if file.is_none() {
        failures.push(format!("100 nested parentheses were rejected: {diags:?}"));
    }
    report(failures);
}

#[test]
fn a_file_over_the_size_limit_is_one_diagnostic_at_its_start_and_is_not_read_whole() {
    let limit = gdc_dsl::parse::MAX_SOURCE_BYTES;
    // A valid optimizer followed by comment lines: valid at any length, refused past the limit.
    let head = "optimizer big {\n  hyper lr = 0.1\n  update(p, g) {\n    p = p - lr * g\n  }\n}\n";
    let line = "// padding ".to_string() + &"x".repeat(88) + "\n";
    let mut src = head.to_string();
    while src.len() + line.len() <= limit {
        src.push_str(&line);
    }
    assert!(gdc_dsl::front_end(&src).0.is_some(), "a file of {} bytes is within the limit", src.len());
    src.push_str(&line);
    let (file, diags) = gdc_dsl::front_end(&src);
    assert!(file.is_none());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].code, diags[0].span.start), ("E0001", 0));
    let text = gdc_dsl::render(&diags, "big.gd", &src);
    assert!(text.contains("longer than 1048576 bytes") && text.contains("big.gd:1:1"), "{text}");

    // From a file of 64 MiB, reading stops just past the limit.
    let path = std::env::temp_dir().join(format!("gdc-big-{}.gd", std::process::id()));
    let mut big = src.into_bytes();
    big.resize(64 << 20, b'x');
    std::fs::write(&path, &big).expect("writes");
    let read = gdc_dsl::parse::read_source(&path).expect("reads");
    let loaded = gdc_dsl::policy::load(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(read.len(), limit + 1);
    assert!(gdc_dsl::front_end(&loaded.expect("loads")).1[0].message.contains("longer than"));
}
