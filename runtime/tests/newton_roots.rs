//! `inv_root(m, k, method = newton)` end to end: Shampoo with Newton roots steps on the CPU
//! as the reference interpreter runs the same program, and stays close to Shampoo with
//! eigendecomposition roots (its statistics start at eps * I: well conditioned); the IR and
//! plan say `inv_root.newton`.

use gdc_runtime::verify::noise_f32;
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};
use std::path::PathBuf;

fn shampoo(method: &str, precision: &str) -> Program {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers/shampoo.gd");
    let text = std::fs::read_to_string(path).expect("shampoo.gd");
    let args = format!("{precision}{method})");
    let text = text
        .replace("inv_root(L, 4)", &format!("inv_root(L, 4{args}"))
        .replace("inv_root(R, 4)", &format!("inv_root(R, 4{args}"));
    let text = text.replace("inv_root(L, 2)", &format!("inv_root(L, 2{args}"));
    Program::compile(&text).expect("compiles")
}

/// Five steps of a 24x40 matrix and a 30-vector; the parameters after.
fn run(program: &Program, backend: Backend) -> Vec<Vec<f32>> {
    let specs = [ParamSpec::new("w", &[24, 40]), ParamSpec::new("b", &[30])];
    let mut opt = Optimizer::with_options(program, &specs, Options { backend, threads: Some(2) }).expect("binds");
    let mut ps: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise_f32(1 + i as u64, s.numel())).collect();
    for step in 0..5u64 {
        let gs: Vec<Vec<f32>> =
            specs.iter().enumerate().map(|(i, s)| noise_f32(10 * step + 20 + i as u64, s.numel())).collect();
        let mut pm: Vec<&mut [f32]> = ps.iter_mut().map(|p| &mut p[..]).collect();
        let gr: Vec<&[f32]> = gs.iter().map(|g| &g[..]).collect();
        opt.step(&mut pm, &gr).expect("steps");
    }
    ps
}

fn max_rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs() / f64::from(y.abs()).max(1e-2))
        .fold(0.0, f64::max)
}

#[test]
fn shampoo_with_newton_roots_matches_the_interpreter_and_eigh() {
    let eigh = run(&shampoo("", ""), Backend::Interp);
    for precision in ["", ", precision = f32"] {
        let program = shampoo(", method = newton", precision);
        let text =
            gdc_compiler::ir::print::module_text(&gdc_compiler::compile(program.source()).expect("compiles").optimized);
        assert!(text.contains("inv_root") && text.contains(".newton"), "{text}");
        let cpu = run(&program, Backend::Cpu);
        let interp = run(&program, Backend::Interp);
        let tol = if precision.is_empty() { 1e-5 } else { 1e-3 };
        let (to_interp, to_eigh) = (max_rel(&cpu, &interp), max_rel(&cpu, &eigh));
        assert!(to_interp < tol, "{precision:?}: the CPU is {to_interp:e} from the interpreter");
        assert!(to_eigh < tol, "{precision:?}: Newton roots are {to_eigh:e} from eigh's");
    }
}
