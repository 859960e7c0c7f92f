//! Random-program differential testing in CI: a fixed set of generated optimizers (every
//! kind of hyperparameter, state shape and initialiser, bf16 state, elementwise operators
//! and built-ins, reductions, `if`, `where`, `every`, `for`, functions, `prepare` with
//! globals, all update kinds and small-matrix operations) each stepped on the interpreter
//! and the CPU backend from the same data, which must agree within the float32-derived
//! tolerance; and every shrunk program of tests/regressions/ replayed on several seeds.
//! `difftest` runs the same generator for as long as one likes.

use gdc_tests::random::run::{run_case, Case};
use gdc_tests::random::{gd_files, generate, parse_regression, program_seed, run_one, shrink_to_file, Stats};
use std::path::PathBuf;

/// Programs per CI run, and the run's seed.
const PROGRAMS: u64 = 1000;
const SEED: u64 = 20_261_128;

#[test]
fn random_programs_agree_on_the_interpreter_and_the_cpu() {
    let started = std::time::Instant::now();
    let mut stats = Stats::default();
    let mut shrunk = Vec::new();
    for i in 0..PROGRAMS {
        let ps = program_seed(SEED, i);
        let o = run_one(ps, generate::Options::default());
        stats.add(ps, &o);
        if let Err(f) = &o.result {
            // A small shrink, so the failure message shows a readable program.
            let (text, _) = shrink_to_file(ps, &o, f, 200);
            shrunk.push(text);
        }
    }
    println!("{}", stats.summary());
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    assert!(shrunk.is_empty(), "{} programs failed; the first, shrunk:\n{}", shrunk.len(), shrunk[0]);
    assert_eq!(stats.programs as u64, PROGRAMS);
    // Where this CPU runs a level of the LLVM tier, every program ran on it too.
    if gdc_compiler::cpu::native::Level::best_available().is_some() {
        assert_eq!(stats.native, stats.passed, "every passing program is compared on the LLVM tier");
    } else {
        println!("the LLVM tier was not compared: this CPU runs none of its levels");
    }
    // The comparisons mean something: nearly every program's values are finite.
    assert!(stats.vacuous * 50 <= stats.programs, "{} of {} runs mostly non-finite", stats.vacuous, stats.programs);
    // The set covers the language.
    for feature in [
        "hyper f32",
        "hyper f32 in range",
        "hyper int",
        "hyper int in range",
        "hyper bool",
        "state like p",
        "state []",
        "state [rows]",
        "state [cols]",
        "state [rows, cols]",
        "state [cols, rows]",
        "state [rows, rows]",
        "state [cols, cols]",
        "state bf16",
        "init zeros",
        "init number",
        "init hyper",
        "init p",
        "init eye",
        "init expression",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "negate",
        "!",
        "&&",
        "||",
        "comparison",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "abs",
        "sign",
        "cos",
        "min",
        "max",
        "clamp",
        "lerp",
        "where",
        "where on data",
        "sum",
        "mean",
        "norm",
        "max_abs",
        "max reduction",
        "min reduction",
        "axis reduction",
        "dot",
        "global_norm",
        "global_sum",
        "global_max_abs",
        "ramp",
        "cosine_ramp",
        "power_ramp",
        "inv_sqrt",
        "warmup_cosine",
        "wsd",
        "if",
        "else",
        "every literal",
        "every hyper",
        "every at",
        "sign of a momentum",
        "for literal",
        "for to hyper",
        "newton-schulz loop",
        "fn scalar",
        "fn tensor",
        "fn [r, c]",
        "fn call",
        "prepare",
        "global",
        "let tuple",
        "update(p, g)",
        "update(p: [rows], g)",
        "update(p: [rows, cols], g)",
        "update(p: [..., rows, cols], g)",
        "@",
        ".T",
        "outer",
        "broadcast",
        "eye",
        "inv_root",
        "eigvals",
        "qr",
        "precision = f32",
    ] {
        assert!(stats.features.get(feature).copied().unwrap_or(0) > 0, "no program used {feature}");
    }
}

fn regressions() -> Vec<(PathBuf, Case)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions");
    gd_files(&dir)
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable");
            let case = parse_regression(&text);
            (p, case)
        })
        .collect()
}

#[test]
fn every_regression_agrees_on_several_seeds() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for (path, case) in regressions() {
        // The seeds it failed with, defaults (1-3) and random hyperparameters (4-6).
        let mut seeds = case.seeds.clone();
        seeds.extend(1..=6);
        for threads in [1, 2] {
            let c = Case { seeds: seeds.clone(), threads, ..case.clone() };
            runs += 1;
            if let Err(f) = run_case(&c) {
                failures.push(format!("{}: {}", path.display(), f.describe()));
            }
        }
    }
    println!("{runs} regression runs");
    assert!(failures.is_empty(), "{failures:#?}");
}
