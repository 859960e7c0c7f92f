//! Hoisting and fusion on hand-written IR: where each scalar is computed, and how tensor
//! work is cut into kernels and library calls.

use gdc_compiler::ir::{read::read_module, Value};
use gdc_compiler::plan::{self, hoist, Buffer, Item, Output, Pass, Phase};

/// The items of the first variant's step, without its gradient check (see `gradient_check`).
fn step_items(p: &plan::Plan) -> Vec<Item> {
    p.variants[0].update.items_of(Pass::Step).map(|(_, it)| it.clone()).collect()
}

fn plan_of(text: &str) -> plan::Plan {
    let m = read_module(text).unwrap_or_else(|e| panic!("{e}"));
    gdc_compiler::ir::verify::verify(&m).unwrap_or_else(|e| panic!("{e}"));
    plan::build(m).unwrap_or_else(|e| panic!("{e}"))
}

const HEADER: &str = "optimizer t\nhyper lr: f32 = 0.1\nhyper beta: f32 = 0.9\nstate m: like(p)\nfunc init(p) {\n}\n";

#[test]
fn hoisting_puts_each_scalar_where_its_inputs_are() {
    let m = read_module(&format!(
        "{HEADER}func update(p) {{
  v0 = hyper beta : f32
  v1 = step : f32
  v2 = pow v0, v1 : f32
  v3 = shape numel : f32
  v4 = mul v2, v3 : f32
  v5 = grad : like(p)
  v6 = reduce.sum v5 : f32
  v7 = div v6, v4 : f32
  v8 = param : like(p)
  v9 = sub v8, v7 : like(p)
  v10 = store param v9
}}"
    ))
    .expect("reads");
    let phases = hoist::phases(&m.variants[0].update);
    use Phase::*;
    assert_eq!(phases, vec![Host, Host, Host, Param, Param, Kernel, Kernel, Device, Kernel, Kernel, Kernel]);
}

#[test]
fn a_consumer_of_a_reduction_starts_a_new_kernel() {
    // x = g * 2 ; n = sum(x) ; p = p - x / n : the division needs the finished sum.
    let p = plan_of(&format!(
        "{HEADER}func update(p) {{
  v0 = grad : like(p)
  v1 = const 2.0 : f32
  v2 = mul v0, v1 : like(p)
  v3 = reduce.sum v2 : f32
  v4 = div v2, v3 : like(p)
  v5 = param : like(p)
  v6 = sub v5, v4 : like(p)
  v7 = store param v6
}}"
    ));
    let items = &step_items(&p);
    assert_eq!(items.len(), 2, "{}", plan::print::plan_text(&p));
    let (Item::Kernel(k0), Item::Kernel(k1)) = (&items[0], &items[1]) else { panic!("two kernels") };
    assert_eq!(k0.reductions, vec![Value::new(3)]);
    assert_eq!(
        k0.outputs,
        vec![Output { value: Value::new(2), buffer: Buffer::Temp(0), guard: None }],
        "x is materialised for k1"
    );
    assert!(k1.inputs.contains(&(Value::new(2), Buffer::Temp(0))));
    assert_eq!(k1.outputs, vec![Output { value: Value::new(6), buffer: Buffer::Param, guard: None }]);
}

#[test]
fn matrix_products_are_library_calls_between_kernels() {
    let p = plan_of(
        "optimizer t\nfunc init(p: [rows, cols]) {\n}\nfunc update(p: [rows, cols]) {
  v0 = grad : [rows, cols]
  v1 = transpose v0 : [cols, rows]
  v2 = matmul v0, v1 : [rows, rows]
  v3 = matmul v2, v0 : [rows, cols]
  v4 = param : [rows, cols]
  v5 = sub v4, v3 : [rows, cols]
  v6 = store param v5
}",
    );
    let kinds: Vec<&str> =
        step_items(&p).iter().map(|i| if matches!(i, Item::Lib(_)) { "call" } else { "kernel" }).collect();
    assert_eq!(kinds, vec!["call", "call", "call", "kernel"], "{}", plan::print::plan_text(&p));
}

#[test]
fn differently_guarded_work_is_not_fused() {
    let p = plan_of(&format!(
        "{HEADER}func update(p) {{
  v0 = step : f32
  v1 = const 3.0 : f32
  v2 = gt v0, v1 : bool
  v3 = grad : like(p)
  v4 = reduce.sum v3 : f32 if v2
  v5 = load m : like(p)
  v6 = add v5, v3 : like(p)
  v7 = store state m v6
}}"
    ));
    let items = &step_items(&p);
    assert_eq!(items.len(), 2, "{}", plan::print::plan_text(&p));
    let guards: Vec<Option<Value>> =
        items.iter().map(|i| if let Item::Kernel(k) = i { k.guard } else { None }).collect();
    assert!(guards.contains(&Some(Value::new(2))) && guards.contains(&None));
}

#[test]
fn a_store_guarded_by_a_host_scalar_is_a_conditional_write_of_the_same_kernel() {
    // if momentum != 0 { m = m + g }: one kernel, whose write of m is conditional.
    let p = plan_of(&format!(
        "{HEADER}func update(p) {{
  v0 = hyper beta : f32
  v1 = const 0.0 : f32
  v2 = ne v0, v1 : bool
  v3 = load m : like(p)
  v4 = grad : like(p)
  v5 = add v3, v4 : like(p)
  v6 = param : like(p)
  v7 = sub v6, v5 : like(p)
  v8 = store param v7
  v9 = store state m v5 if v2
}}"
    ));
    let items = &step_items(&p);
    assert_eq!(items.len(), 1, "{}", plan::print::plan_text(&p));
    let Item::Kernel(k) = &items[0] else { panic!("a kernel") };
    assert!(k.outputs.contains(&Output { value: Value::new(5), buffer: Buffer::State(0), guard: Some(Value::new(2)) }));
    assert!(p.variants[0].update.temps.is_empty());
}

/// The items of a matrix update that run whatever the loop bound (no guard at all).
fn unguarded_items(range_end: u32) -> usize {
    let source = format!(
        "optimizer t {{
  hyper n: int = 2 in 0..={range_end}
  update(p: [rows, cols], g) {{
    var x = g
    for i in 0..n {{
      x = 1.5 * x - 0.5 * (x @ x.T) @ x
    }}
    p = p - x
  }}
}}"
    );
    let compiled = gdc_compiler::compile(&source).unwrap_or_else(|e| panic!("{e}"));
    step_items(&compiled.plan)
        .iter()
        .filter(|item| match item {
            Item::Kernel(k) => k.guard.is_none(),
            Item::Lib(l) => l.guard.is_none(),
        })
        .count()
}

#[test]
fn loop_iterations_past_a_hyperparameter_bound_cost_nothing() {
    // Iteration i runs only after iteration i - 1, so it reads that iteration's values
    // directly; the selects picking the last iteration's values fuse after the loop. Before,
    // every iteration ended in a select kernel that ran (a copy) whatever the bound.
    assert_eq!(unguarded_items(4), unguarded_items(40), "unguarded work grows with the loop's range");
}

#[test]
fn temporaries_whose_lifetimes_do_not_overlap_share_a_buffer() {
    let compiled = gdc_compiler::compile(
        "optimizer t {
  update(p: [rows, cols], g) {
    var x = g
    for i in 0..6 {
      x = 1.5 * x - 0.5 * (x @ x.T) @ x
    }
    p = p - x
  }
}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let update = &compiled.plan.variants[0].update;
    // Six iterations each materialise a Gram matrix, a product and the next x; live at once
    // are at most x, its Gram matrix and the product (and a kernel's input and output).
    assert!(update.temps.len() <= 6, "{} temporaries: {:?}", update.temps.len(), update.temps);
    // No item reads a temporary it writes (the parameter and state update in place).
    for item in &update.items {
        let (reads, writes): (Vec<Buffer>, Vec<Buffer>) = match item {
            Item::Kernel(k) => (k.inputs.iter().map(|i| i.1).collect(), k.outputs.iter().map(|o| o.buffer).collect()),
            Item::Lib(l) => (l.inputs.iter().map(|i| i.1).collect(), vec![l.output]),
        };
        let temp_written = |w: &Buffer| matches!(w, Buffer::Temp(_)) && reads.contains(w);
        assert!(!writes.iter().any(temp_written), "an item reads the temporary it writes: {item:?}");
    }
}

#[test]
fn every_update_plan_ends_with_its_gradient_check() {
    // One kernel over the parameter's domain that reads only the gradient and counts its
    // non-finite elements: g * 0 is 0 for a finite element and NaN otherwise.
    let compiled = gdc_compiler::compile(
        "optimizer t {
  hyper lr = 0.1
  update(p: [rows, cols], g) { p = p - lr * g @ g.T @ g }
  update(p, g) { p = p - lr * g }
}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = plan::print::plan_text(&compiled.plan);
    for (vp, vm) in compiled.plan.variants.iter().zip(&compiled.plan.module.variants) {
        assert!(vp.init.check.is_none());
        let check = vp.update.check.expect("an update plan has a gradient check");
        assert_eq!(check.item, vp.update.items.len() - 1, "{text}");
        let Item::Kernel(k) = &vp.update.items[check.item] else { panic!("a kernel") };
        assert_eq!(k.domain, vp.pattern.param_shape());
        assert_eq!(k.inputs.iter().map(|(_, b)| *b).collect::<Vec<_>>(), vec![Buffer::Grad]);
        assert!(k.outputs.is_empty() && k.guard.is_none());
        assert_eq!(k.reductions, vec![check.count]);
        let ops: Vec<String> = k.body.iter().map(|v| format!("{:?}", vm.update.inst(*v).op)).collect();
        assert_eq!(ops, ["Binary(Mul)", "Binary(Eq)", "Select", "Reduce(Sum, None)"], "{text}");
        assert_eq!(vp.update.items_of(Pass::Check).count(), 1);
        assert_eq!(vp.update.items_of(Pass::Step).count(), vp.update.items.len() - 1);
    }
    assert_eq!(text.matches("(gradient check, run apart)").count(), 2, "{text}");
}

/// Sophia-G's step: the guarded refresh of `hess` from the optional input `h` is one pass
/// of its own, and everything else one more, reading `hess` after the refresh from its
/// buffer: no temporary, no copy of `hess` (before the `stored_selects` and `merge` rules
/// there were five tensor-sized temporaries and four passes).
#[test]
fn a_guarded_refresh_between_two_passes_leaves_one_pass_and_no_temporaries() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/sophia_g.gd");
    let c = gdc_compiler::compile(&std::fs::read_to_string(path).expect("sophia_g.gd")).expect("compiles");
    let p = &c.plan;
    let text = plan::print::plan_text(p);
    let items = step_items(p);
    assert_eq!(items.len(), 2, "{text}");
    assert!(p.variants[0].update.temps.is_empty(), "{text}");
    let (Item::Kernel(refresh), Item::Kernel(step)) = (&items[0], &items[1]) else { panic!("two kernels:\n{text}") };
    assert!(refresh.guard.is_some(), "the refresh runs only when h came: {text}");
    let bufs = |k: &plan::Kernel| k.inputs.iter().map(|(_, b)| *b).collect::<Vec<_>>();
    assert!(bufs(refresh).contains(&Buffer::Input(0)), "{text}");
    assert!(step.guard.is_none() && !bufs(step).contains(&Buffer::Input(0)), "{text}");
    let mut read = bufs(step);
    read.sort_by_key(|b| format!("{b:?}"));
    assert_eq!(read, [Buffer::Grad, Buffer::Param, Buffer::State(0), Buffer::State(1)], "{text}");
}

/// A kernel merges into the next one of its domain and guard only when nothing between them
/// needs it: here the product between reads `x`, so the two passes stay apart.
#[test]
fn a_kernel_another_item_reads_does_not_merge_past_it() {
    let p = plan_of(
        "optimizer t\nhyper lr: f32 = 0.1\nstate m: [rows, cols]\nfunc init(p: [rows, cols]) {\n}\nfunc update(p: [rows, cols]) {
  v0 = grad : [rows, cols]
  v1 = const 2.0 : f32
  v2 = mul v0, v1 : [rows, cols]
  v3 = matmul.nt v2, v2 : [rows, rows]
  v4 = matmul v3, v2 : [rows, cols]
  v5 = param : [rows, cols]
  v6 = sub v5, v4 : [rows, cols]
  v7 = store param v6
}",
    );
    let items = step_items(&p);
    let kinds: Vec<&str> = items.iter().map(|i| if matches!(i, Item::Kernel(_)) { "k" } else { "call" }).collect();
    assert_eq!(kinds, ["k", "call", "call", "k"], "{}", plan::print::plan_text(&p));
}
