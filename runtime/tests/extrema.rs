//! `max(x)` and `min(x)`, whole and along each axis, on the CPU backend against the float64
//! interpreter (compiler/tests/programs/extrema.gd): shapes with one row or column, tails past
//! the vector width, a long vector split across chunks, and grid bands on 1 and 2 threads.

use gdc_runtime::verify::check;
use gdc_runtime::{Backend, Options, ParamSpec, Program};

#[test]
fn extrema_agree_with_the_interpreter_on_the_cpu() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compiler/tests/programs/extrema.gd");
    let program = Program::compile(&std::fs::read_to_string(path).expect("reads")).expect("compiles");
    let shapes: [&[usize]; 8] = [&[1, 1], &[1, 9], &[9, 1], &[5, 7], &[37, 129], &[300, 70], &[1], &[70_013]];
    let specs: Vec<ParamSpec> = shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("p{i}"), s)).collect();
    for threads in [1, 2] {
        for seed in [1, 5] {
            let options = Options { backend: Backend::Cpu, threads: Some(threads) };
            let a = check(&program, &specs, options, seed, 3).expect("runs");
            assert!(a.first.is_none(), "{threads} thread(s), seed {seed}: {:?}", a.first);
            assert_eq!(a.finite, a.total, "every value finite");
        }
    }
}
