//! Each pass on hand-written IR: read the text, run one pass, compare the printed result.

use gdc_compiler::ir::{print::module_text, read::read_module, verify::verify};
use gdc_compiler::passes::{const_fold, cse, dce, eigh_order, fold_transpose, simplify, symmetry};

/// Runs `pass` on the module in `input` and returns the printed update function.
fn after(pass: fn(&mut gdc_compiler::ir::Module), input: &str) -> String {
    let mut m = read_module(input).unwrap_or_else(|e| panic!("bad test IR: {e}"));
    verify(&m).unwrap_or_else(|e| panic!("test IR does not verify: {e}"));
    pass(&mut m);
    verify(&m).unwrap_or_else(|e| panic!("the pass broke the IR: {e}"));
    let text = module_text(&m);
    let start = text.find("func update(p").expect("an update function");
    text[start..].trim_end().to_string()
}

const HEADER: &str = "optimizer t\nhyper lr: f32 = 0.1\nstate m: like(p)\n";

#[test]
fn const_fold_folds_scalar_literals_but_never_hypers() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = const 1.0 : f32
  v1 = const 0.9 : f32
  v2 = sub v0, v1 : f32
  v3 = hyper lr : f32
  v4 = mul v2, v3 : f32
  v5 = param : like(p)
  v6 = mul v5, v4 : like(p)
  v7 = store param v6
}}"
    );
    let out = after(const_fold::run, &ir);
    assert!(out.contains("v2 = const 0.09999999999999998 : f32"), "{out}");
    assert!(out.contains("v4 = mul v2, v3 : f32"), "hypers are never folded: {out}");
}

#[test]
fn simplify_removes_identities_and_unchanged_stores() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = param : like(p)
  v1 = const 1.0 : f32
  v2 = const 0.0 : f32
  v3 = mul v0, v1 : like(p)
  v4 = add v3, v2 : like(p)
  v5 = load m : like(p)
  v6 = store state m v5
  v7 = store param v4
}}"
    );
    let out = after(simplify::run, &ir);
    assert!(out.contains("store param v0"), "x * 1 + 0 => x: {out}");
    assert!(!out.contains("store state m"), "store m (load m) is removed: {out}");
}

#[test]
fn simplify_keeps_multiplication_by_zero() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = param : like(p)
  v1 = const 0.0 : f32
  v2 = mul v0, v1 : like(p)
  v3 = store param v2
}}"
    );
    let out = after(simplify::run, &ir);
    assert!(out.contains("v2 = mul v0, v1"), "x * 0 must stay (NaN * 0 is NaN): {out}");
}

#[test]
fn simplify_turns_a_select_of_the_old_state_into_a_guarded_store() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = step : f32
  v1 = const 2.0 : f32
  v2 = gt v0, v1 : bool
  v3 = load m : like(p)
  v4 = grad : like(p)
  v5 = add v3, v4 : like(p)
  v6 = select v2, v5, v3 : like(p)
  v7 = store state m v6
}}"
    );
    let out = after(simplify::run, &ir);
    assert!(out.contains("store state m v5 if v2"), "{out}");
}

#[test]
fn cse_merges_identical_pure_instructions() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = hyper lr : f32
  v1 = hyper lr : f32
  v2 = param : like(p)
  v3 = mul v2, v0 : like(p)
  v4 = mul v2, v1 : like(p)
  v5 = add v3, v4 : like(p)
  v6 = store param v5
}}"
    );
    let out = after(cse::run, &ir);
    assert!(out.contains("v5 = add v3, v3"), "{out}");
}

#[test]
fn dce_removes_unused_values_and_keeps_stores() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = hyper lr : f32
  v1 = param : like(p)
  v2 = sqrt v1 : like(p)
  v3 = mul v1, v0 : like(p)
  v4 = store param v3
}}"
    );
    let out = after(dce::run, &ir);
    assert!(!out.contains("sqrt"), "{out}");
    assert!(out.contains("v3 = store param v2"), "renumbered, store kept: {out}");
}

#[test]
fn the_verifier_rejects_a_use_before_definition() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = param : like(p)
  v1 = mul v0, v2 : like(p)
  v2 = hyper lr : f32
  v3 = store param v1
}}"
    );
    let m = read_module(&ir).expect("reads");
    let err = verify(&m).expect_err("must be rejected");
    assert!(err.contains("used before it is defined"), "{err}");
}

#[test]
fn the_verifier_rejects_a_wrong_type() {
    let ir = format!(
        "{HEADER}func init(p) {{\n}}\nfunc update(p) {{
  v0 = param : like(p)
  v1 = sqrt v0 : f32
}}"
    );
    let m = read_module(&ir).expect("reads");
    let err = verify(&m).expect_err("must be rejected");
    assert!(err.contains("recorded type f32"), "{err}");
}

#[test]
fn fold_transpose_reads_transposed_operands_in_place() {
    let ir = "optimizer t\nfunc init(p: [rows, cols]) {\n}\nfunc update(p: [rows, cols]) {
  v0 = grad : [rows, cols]
  v1 = transpose v0 : [cols, rows]
  v2 = matmul v0, v1 : [rows, rows]
  v3 = matmul v1, v0 : [cols, cols]
  v4 = matmul.tn v1, v3 : [rows, cols]
  v5 = matmul v2, v4 : [rows, cols]
  v6 = store param v5
}";
    let out = after(fold_transpose::run, ir);
    assert!(out.contains("v2 = matmul.nt v0, v0 : [rows, rows]"), "{out}");
    assert!(out.contains("v3 = matmul.tn v0, v0 : [cols, cols]"), "{out}");
    assert!(out.contains("v4 = matmul v0, v3 : [rows, cols]"), "a transposed transpose reads straight: {out}");
}

#[test]
fn symmetry_marks_the_symmetric_products_of_newton_schulz() {
    let ir = "optimizer t\nfunc init(p: [rows, cols]) {\n}\nfunc update(p: [rows, cols]) {
  v0 = grad : [rows, cols]
  v1 = matmul.nt v0, v0 : [rows, rows]
  v2 = matmul v1, v1 : [rows, rows]
  v3 = const 2.0315 : f32
  v4 = mul v3, v2 : [rows, rows]
  v5 = add v1, v4 : [rows, rows]
  v6 = matmul v5, v0 : [rows, cols]
  v7 = matmul v5, v5 : [rows, rows]
  v8 = matmul.tn v0, v0 : [cols, cols]
  v9 = matmul v6, v8 : [rows, cols]
  v10 = matmul v1, v2 : [rows, rows]
  v11 = store param v9
}";
    let out = after(symmetry::run, ir);
    assert!(out.contains("v1 = matmul.nt.sym v0, v0"), "x xT: {out}");
    assert!(out.contains("v2 = matmul.sym v1, v1"), "the square of a symmetric matrix: {out}");
    assert!(out.contains("v6 = matmul v5, v0"), "a symmetric times a rectangular matrix: {out}");
    assert!(
        out.contains("v7 = matmul.sym v5, v5"),
        "a linear combination of symmetric matrices stays symmetric: {out}"
    );
    assert!(out.contains("v8 = matmul.tn.sym v0, v0"), "xT x: {out}");
    assert!(out.contains("v10 = matmul v1, v2 "), "two different symmetric matrices need not commute: {out}");
}

#[test]
fn symmetry_leaves_products_of_different_operands_alone() {
    let ir = "optimizer t\nfunc init(p: [rows, cols]) {\n}\nfunc update(p: [rows, cols]) {
  v0 = param : [rows, cols]
  v1 = grad : [rows, cols]
  v2 = matmul.nt v0, v1 : [rows, rows]
  v3 = matmul v2, v2 : [rows, rows]
  v4 = matmul v3, v0 : [rows, cols]
  v5 = store param v4
}";
    let out = after(symmetry::run, ir);
    assert!(!out.contains(".sym"), "x yT and its square are not symmetric in general: {out}");
}

#[test]
fn eigh_order_makes_one_decomposition_of_an_ordered_eigenbasis() {
    let ir = "optimizer t\nfunc init(p: [rows, cols]) {\n}\nfunc update(p: [rows, cols]) {
  v0 = grad : [rows, cols]
  v1 = matmul.nt.sym v0, v0 : [rows, rows]
  v2 = step : f32
  v3 = const 1.0 : f32
  v4 = eq v2, v3 : bool
  v5 = eigvecs v1 : [rows, rows] if v4
  v6 = eigvals v1 : [rows] if v4
  v7 = sort_perm v6 : [rows, rows] if v4
  v8 = matmul v5, v7 : [rows, rows] if v4
  v9 = eigvecs.f32 v1 : [rows, rows]
  v10 = eigvals.f32 v1 : [rows]
  v11 = sort_perm v10 : [rows, rows]
  v12 = matmul v9, v11 : [rows, rows]
  v13 = const 8.0 : f32
  v14 = matmul v9, v11, v13 : [rows, rows]
  v15 = eigvals v8 : [rows] if v4
  v16 = sort_perm v15 : [rows, rows] if v4
  v17 = matmul v5, v16 : [rows, rows] if v4
  v18 = matmul v5, v7 : [rows, rows]
  v19 = eigvals v1 : [rows]
  v20 = sort_perm v19 : [rows, rows]
  v21 = matmul v9, v20 : [rows, rows]
  v22 = add v8, v12 : [rows, rows]
  v23 = add v22, v14 : [rows, rows]
  v24 = add v23, v17 : [rows, rows]
  v25 = add v24, v18 : [rows, rows]
  v26 = add v25, v21 : [rows, rows]
  v27 = matmul v26, v0 : [rows, cols]
  v28 = store param v27
}";
    let out = after(eigh_order::run, ir);
    assert!(out.contains("v8 = eigvecs.desc v1 : [rows, rows] if v4"), "the idiom, under its guard: {out}");
    assert!(out.contains("v12 = eigvecs.desc.f32 v1 "), "in float32 too: {out}");
    assert!(out.contains("v14 = matmul v9, v11, v13 "), "a bf16 product rounds the vectors: kept: {out}");
    assert!(out.contains("v17 = matmul v5, v16 "), "the values of another matrix: kept: {out}");
    assert!(out.contains("v18 = matmul v5, v7 "), "a product outside the decompositions' guard: kept: {out}");
    assert!(out.contains("v21 = matmul v9, v20 "), "decompositions of different precisions: kept: {out}");
}
