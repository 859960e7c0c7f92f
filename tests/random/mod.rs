//! Random-program differential testing: a seeded generator of well-typed `.gd` optimizers
//! (`generate`), a runner that steps each on the float64 interpreter and the CPU backend and
//! compares them (`run`), a greedy shrinker for failures (`shrink`), and what the test and
//! `difftest` share: the numbered runs, their statistics and the regression files.

pub mod ast;
pub mod generate;
pub mod run;
pub mod shrink;

use run::{case_for, run_case, Case, Failure, Pass};
use shrink::{shrink, Shrinkable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The seed of program `index` of a run started at `seed`.
pub fn program_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(index)
}

/// One program of a run: generated, rendered and run.
pub struct Outcome {
    pub prog: ast::Prog,
    pub case: Case,
    pub result: Result<Pass, Failure>,
}

pub fn run_one(program_seed: u64, options: generate::Options) -> Outcome {
    let prog = generate::generate(program_seed, options);
    let case = case_for(&prog, program_seed);
    let result = run_case(&case);
    Outcome { prog, case, result }
}

/// What a run saw.
#[derive(Default, Debug)]
pub struct Stats {
    pub programs: usize,
    pub passed: usize,
    /// Programs whose reference values were mostly not finite (the comparison proved little).
    pub vacuous: usize,
    /// The worst error of a passing program, as a fraction of the tolerance.
    pub worst: f64,
    /// Passing programs also stepped, bit for bit alike, with the LLVM tier's kernels.
    pub native: usize,
    /// Passing programs with values only the float32-rounded reference explains (a
    /// discontinuous operation flipped on a float32 zero), and those values.
    pub flipped_programs: usize,
    pub flipped_values: usize,
    /// How many programs used each feature.
    pub features: BTreeMap<&'static str, usize>,
    /// Failures: the program seed and the failure.
    pub failures: Vec<(u64, Failure)>,
}

impl Stats {
    pub fn add(&mut self, seed: u64, o: &Outcome) {
        self.programs += 1;
        for f in &o.prog.features {
            *self.features.entry(f).or_default() += 1;
        }
        match &o.result {
            Ok(p) => {
                self.passed += 1;
                self.vacuous += usize::from(p.vacuous);
                self.native += usize::from(p.native);
                self.flipped_programs += usize::from(p.flipped > 0);
                self.flipped_values += p.flipped;
                self.worst = self.worst.max(p.worst);
            }
            Err(f) => self.failures.push((seed, f.clone())),
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "programs {}, agreed {} ({} also on the LLVM tier, bit for bit; {} with {} values a discontinuity flipped on a float32 zero, explained by the float32-rounded reference), failed {}, mostly non-finite {}, worst error {:.4} of the tolerance\nfeatures (programs using each):\n",
            self.programs,
            self.passed,
            self.native,
            self.flipped_programs,
            self.flipped_values,
            self.failures.len(),
            self.vacuous,
            self.worst
        );
        for (f, n) in &self.features {
            s.push_str(&format!("  {f:32} {n}\n"));
        }
        for (seed, f) in &self.failures {
            s.push_str(&format!("FAILED program seed {seed}: {}\n", f.describe().lines().next().unwrap_or("")));
        }
        s
    }
}

/// Shrinks a failing outcome and renders it as a regression file: a `//` header saying what
/// failed, the seed, the shapes and data seeds, then the program.
pub fn shrink_to_file(program_seed: u64, o: &Outcome, failure: &Failure, budget: usize) -> (String, Failure) {
    let (small, f) = shrink(Shrinkable { prog: o.prog.clone(), case: o.case.clone() }, failure, budget);
    (regression_text(program_seed, &small.case, &f), f)
}

pub fn regression_text(program_seed: u64, case: &Case, f: &Failure) -> String {
    let shapes: Vec<String> =
        case.shapes.iter().map(|s| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")).collect();
    let seeds: Vec<String> = case.seeds.iter().map(|s| s.to_string()).collect();
    let mut head = String::new();
    for (i, line) in f.describe().lines().take(12).enumerate() {
        head.push_str(if i == 0 { "// failed: " } else { "//   " });
        head.push_str(line);
        head.push('\n');
    }
    format!(
        "{head}// found by difftest: program seed {program_seed} (shrunk)\n// shapes: {}\n// seeds: {}\n// steps: {}\n\n{}",
        shapes.join(" "),
        seeds.join(" "),
        case.steps,
        case.source
    )
}

/// A regression file read back as a case: its `// shapes:`, `// seeds:` and `// steps:`
/// header lines (defaults when absent) and the whole text as source.
pub fn parse_regression(text: &str) -> Case {
    let field = |key: &str| -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix("// ").and_then(|r| r.strip_prefix(key)).map(|r| r.trim().to_string()))
    };
    let shapes = field("shapes:")
        .map(|s| {
            s.split_whitespace().map(|t| t.split('x').map(|d| d.parse().expect("a dimension")).collect()).collect()
        })
        .unwrap_or_else(|| vec![vec![3, 4], vec![5]]);
    let seeds = field("seeds:")
        .map(|s| s.split_whitespace().map(|t| t.parse().expect("a seed")).collect())
        .unwrap_or_else(|| vec![1]);
    let steps = field("steps:").map(|s| s.parse().expect("a step count")).unwrap_or(4);
    Case { source: text.to_string(), shapes, seeds, steps, threads: 2 }
}

/// The `.gd` files of a folder, sorted.
pub fn gd_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "gd")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
