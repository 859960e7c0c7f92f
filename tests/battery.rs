//! The shared battery, one table of optimizers (lib.rs) through the same checks:
//! - it minimises an ill-conditioned quadratic (matrix and vector parameters);
//! - a learning rate of 0, set at run time without recompiling, leaves parameters unchanged;
//! - its state has the shapes the program declares, for every parameter, across steps.

use gdc_compiler::interp::Interpreter;
use gdc_tests::{compile, noise, Entry, OPTIMIZERS};

/// The parameters the battery uses: a 6x4 matrix, and a vector unless matrices only.
fn params(entry: &Entry) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let mut p = vec![("w".to_string(), vec![6, 4], noise(1, 24))];
    if !entry.matrix_only {
        p.push(("b".to_string(), vec![5], noise(2, 5)));
    }
    p
}

/// f(x) = 1/2 sum_i a_i (x_i - t_i)^2 with curvatures a_i from 0.1 to 10.
fn loss_and_grad(x: &[f64], seed: u64) -> (f64, Vec<f64>) {
    let t = noise(seed + 100, x.len());
    let n = x.len().max(2) as f64;
    let mut loss = 0.0;
    let mut g = Vec::with_capacity(x.len());
    for (i, (xi, ti)) in x.iter().zip(&t).enumerate() {
        let a = 0.1 * 100f64.powf(i as f64 / (n - 1.0));
        loss += 0.5 * a * (xi - ti).powi(2);
        g.push(a * (xi - ti));
    }
    (loss, g)
}

fn total_loss(values: &[Vec<f64>]) -> f64 {
    values.iter().enumerate().map(|(i, v)| loss_and_grad(v, i as u64).0).sum()
}

fn run(entry: &Entry, steps: usize, lr: f64) -> (Interpreter, Vec<Vec<f64>>) {
    let c = compile(entry.name);
    let ps = params(entry);
    let shapes: Vec<(String, Vec<usize>)> = ps.iter().map(|p| (p.0.clone(), p.1.clone())).collect();
    let mut it = Interpreter::new(c.plan, &shapes).unwrap_or_else(|e| panic!("{}: {e}", entry.name));
    // A policy's learning rates are its optimizers' (`muon.lr`, `adamw.lr`).
    let lrs: Vec<String> =
        it.plan.module.hypers.iter().map(|h| h.name.clone()).filter(|n| n == "lr" || n.ends_with(".lr")).collect();
    for name in lrs {
        it.set_hyper(&name, lr).unwrap_or_else(|e| panic!("{}: {e}", entry.name));
    }
    let mut values: Vec<Vec<f64>> = ps.iter().map(|p| p.2.clone()).collect();
    for t in 0..steps {
        let grads: Vec<Vec<f64>> = values.iter().enumerate().map(|(i, v)| loss_and_grad(v, i as u64).1).collect();
        // K-FAC's and Sophia's statistics: random, as the differential tests hand them.
        let given = gdc_runtime::verify::random_inputs(&it.plan.module, &shapes, 1, t);
        gdc_compiler::golden::Stepper::step(&mut it, &mut values, &grads, &given)
            .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
    }
    (it, values)
}

#[test]
fn every_optimizer_minimises_an_ill_conditioned_quadratic() {
    let mut failures = Vec::new();
    for entry in OPTIMIZERS {
        let start: Vec<Vec<f64>> = params(entry).into_iter().map(|p| p.2).collect();
        let before = total_loss(&start);
        let (_, values) = run(entry, 300, entry.lr);
        let after = total_loss(&values);
        println!("{:22} loss {before:.4} -> {after:.6}", entry.name);
        if after.is_nan() || after >= 0.1 * before {
            failures.push(format!("{}: loss {before} -> {after}", entry.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_zero_learning_rate_set_at_run_time_changes_nothing() {
    for entry in OPTIMIZERS {
        let start: Vec<Vec<f64>> = params(entry).into_iter().map(|p| p.2).collect();
        let (_, values) = run(entry, 5, 0.0);
        assert_eq!(values, start, "{}", entry.name);
    }
}

#[test]
fn state_has_the_declared_shapes_for_every_parameter() {
    for entry in OPTIMIZERS {
        let (it, _) = run(entry, 3, entry.lr);
        let m = &it.plan.module;
        for bp in &it.params {
            for (s, info) in m.states.iter().enumerate() {
                let Some(t) = &bp.states[s] else { continue };
                let expected = match &info.shape {
                    gdc_dsl::types::Shape::Like => bp.numel,
                    gdc_dsl::types::Shape::Scalar => 1,
                    gdc_dsl::types::Shape::Dims(d) => {
                        d.iter().map(|n| if n == "rows" { bp.rows } else { bp.cols }).product()
                    }
                };
                assert_eq!(t.data.len(), expected, "{} state {} of {}", entry.name, info.name, bp.name);
                assert!(
                    t.data.iter().all(|x| x.is_finite()),
                    "{} state {} of {} is not finite",
                    entry.name,
                    info.name,
                    bp.name
                );
            }
        }
    }
    // Adafactor factors matrices and keeps a full second moment only for vectors.
    let entry = OPTIMIZERS.iter().find(|e| e.name == "adafactor").expect("adafactor");
    let (it, _) = run(entry, 1, entry.lr);
    let has = |p: usize, s: &str| it.state(p, s).is_some();
    assert!(has(0, "row_var") && has(0, "col_var") && !has(0, "variance"));
    assert!(!has(1, "row_var") && !has(1, "col_var") && has(1, "variance"));
}
