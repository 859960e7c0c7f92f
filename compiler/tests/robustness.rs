//! Everything after the checker is total on checked input: every mutation of every example
//! that the checker accepts compiles without an internal error, its plan steps on the
//! interpreter without one (NaN is allowed; a crash or a plan bug is not), and the CPU
//! backend compiles its kernels to machine code.

mod common;

use common::Rng;
use gdc_compiler::interp::{InterpError, Interpreter};
use std::panic::{catch_unwind, AssertUnwindSafe};

const TOKENS: &[&str] = &[
    " + g",
    " * 2",
    " - p",
    " / m",
    "sqrt(",
    ")",
    " @ g.T",
    ".T",
    " ^ 2",
    "-",
    " 0 ",
    " 1e-8 ",
    "step",
    "numel",
    "rows",
    " where(step > 2, ",
    ", 1)",
    "norm(g)",
    "sum(g, axis = 1)",
    "every 2 { ",
    " }",
    "if step > 1 { ",
    " } else { ",
    "let z = g\n",
    "var q = p\n",
    "p = p * 0.5\n",
    "for i in 0..2 { ",
    "\n",
    " && ",
    " > ",
    "max(",
    "lerp(",
    "let o = p\n",
    " * o",
    " * norm(p)",
    "p = p + g\n",
    " / norm(o)",
    "let o = m\n",
    "m = m * 2\n",
];

fn mutate(src: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len();
    let at = rng.below(n);
    let len = 1 + rng.below(12);
    let end = (at + len).min(n);
    let mut out: Vec<char> = chars[..at].to_vec();
    match rng.below(4) {
        0 => out.extend(&chars[end..]),
        1 => {
            out.extend(TOKENS[rng.below(TOKENS.len())].chars());
            out.extend(&chars[at..]);
        }
        2 => {
            out.extend(&chars[at..end]);
            out.extend(&chars[at..]);
        }
        _ => {
            out.extend(TOKENS[rng.below(TOKENS.len())].chars());
            out.extend(&chars[end..]);
        }
    }
    out.into_iter().collect()
}

fn exercise(src: &str) -> Result<(), String> {
    let compiled = match gdc_compiler::compile(src) {
        Ok(c) => c,
        Err(gdc_compiler::CompileError::Source(_)) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    // Cranelift for every kernel (skipping plans of Muon's size, which take long to compile
    // and add no kind of kernel the others lack).
    let kernels: usize = compiled.plan.variants.iter().map(|v| v.init.items.len() + v.update.items.len()).sum();
    if kernels <= 40 {
        gdc_compiler::cpu::compile(&compiled.plan).map_err(|e| format!("CPU backend: {e}"))?;
    }
    let params = [
        ("w".to_string(), vec![3, 2], vec![0.5, -1.0, 0.25, 2.0, -0.5, 1.5]),
        ("b".to_string(), vec![4], vec![0.1, -0.2, 0.3, -0.4]),
    ];
    for p in [&params[..], &params[..1]] {
        let shapes: Vec<(String, Vec<usize>)> = p.iter().map(|x| (x.0.clone(), x.1.clone())).collect();
        let mut it = match Interpreter::new(compiled.plan.clone(), &shapes) {
            Ok(it) => it,
            Err(InterpError::Internal(e)) => return Err(e),
            Err(_) => continue,
        };
        let mut values: Vec<Vec<f64>> = p.iter().map(|x| x.2.clone()).collect();
        let grads: Vec<Vec<f64>> = p.iter().map(|x| x.2.iter().map(|v| v * 0.3 - 0.1).collect()).collect();
        for _ in 0..3 {
            if let Err(InterpError::Internal(e)) = it.step(&mut values, &grads) {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[test]
fn checked_mutations_compile_and_run_without_internal_errors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers");
    let mut sources: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .map(|p| (p.display().to_string(), gdc_dsl::policy::load(&p).expect("read")))
        .collect();
    sources.sort();
    let mut rng = Rng(0x0dd_ba11);
    let (mut accepted, mut failures) = (0, Vec::new());
    for round in 0..8000 {
        let (name, src) = &sources[round % sources.len()];
        let mut text = src.clone();
        for _ in 0..1 + rng.below(2) {
            text = mutate(&text, &mut rng);
        }
        let result = catch_unwind(AssertUnwindSafe(|| exercise(&text)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name} (round {round}): {e}\n--- source ---\n{text}")),
            Err(_) => failures.push(format!("{name} (round {round}): PANIC\n--- source ---\n{text}")),
        }
        if gdc_dsl::front_end(&text).0.is_some() {
            accepted += 1;
        }
    }
    println!("{accepted} of 8000 mutations passed the checker and were compiled and run");
    assert!(accepted > 200, "too few mutations reach the compiler to test it: {accepted}");
    assert!(failures.is_empty(), "{} failures, first:\n{}", failures.len(), failures[0]);
}

#[test]
fn malformed_and_mutated_cases_are_errors_not_panics() {
    use gdc_compiler::golden::{parse_case, replay, CaseError};
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let adamw =
        gdc_compiler::compile(&std::fs::read_to_string(format!("{root}/examples/optimizers/adamw.gd")).expect("adamw"))
            .unwrap_or_else(|e| panic!("{e}"));
    let shampoo = gdc_compiler::compile(
        &std::fs::read_to_string(format!("{root}/examples/optimizers/shampoo.gd")).expect("shampoo"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(format!("{root}/tests/golden/adamw-default.json")).expect("case");
    let mut rng = Rng(0xca5e);
    let mut outcomes = [0usize; 3]; // parse error, replay error, replayed
    for round in 0..400 {
        let mut t = text.clone();
        for _ in 0..1 + rng.below(3) {
            let chars: Vec<char> = t.chars().collect();
            let at = rng.below(chars.len());
            let end = (at + 1 + rng.below(8)).min(chars.len());
            let insert = ["9", "-", "1e308", "[", "]", "{", "\"w\"", ",", "0", "null", "\"\u{e9}\"", "4294967296"]
                [rng.below(12)];
            t = chars[..at].iter().collect::<String>()
                + if rng.below(2) == 0 { insert } else { "" }
                + &chars[end..].iter().collect::<String>();
        }
        let result = catch_unwind(AssertUnwindSafe(|| match parse_case(&t, "mutated.json") {
            Err(_) => 0,
            Ok(case) => match replay(adamw.plan.clone(), &case) {
                Err(CaseError::Interp(gdc_compiler::interp::InterpError::Internal(e))) => panic!("internal error: {e}"),
                Err(_) => 1,
                Ok(_) => 2,
            },
        }));
        match result {
            Ok(k) => outcomes[k] += 1,
            Err(_) => panic!("round {round} panicked on:\n{t}"),
        }
    }
    println!("parse errors {}, replay errors {}, replayed {}", outcomes[0], outcomes[1], outcomes[2]);
    assert!(outcomes[0] > 0 && outcomes[2] > 0, "{outcomes:?}");

    // Shapes too large to hold are refused with a message, before anything is allocated.
    let huge = r#"{"format": "gdc-golden-1", "optimizer": "adamw", "params": [{"name": "w", "shape": [4294967296, 4294967296], "init": []}], "steps": [], "tolerance": {"rel": 0, "abs": 0}}"#;
    let err = parse_case(huge, "huge.json").expect_err("too large");
    assert!(err.to_string().contains("too large to hold"), "{err}");
    let wide = format!(
        r#"{{"format": "gdc-golden-1", "optimizer": "shampoo", "params": [{{"name": "v", "shape": [100000], "init": [{}]}}], "steps": [], "tolerance": {{"rel": 0, "abs": 0}}}}"#,
        vec!["0"; 100000].join(",")
    );
    let case = parse_case(&wide, "wide.json").expect("a valid case");
    let err = replay(shampoo.plan.clone(), &case).expect_err("L would be 10^10 elements");
    assert!(err.to_string().contains("needs a state `L` of 10000000000 elements"), "{err}");
}
