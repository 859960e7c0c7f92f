//! Greedy shrinking of a failing case: try smaller variants (fewer updates, functions,
//! members, statements, loop iterations, parameters, seeds and steps; expressions replaced
//! by their parts or by leaves) and keep the first that still fails the same way (same
//! [`Failure::signature`]), until none does.

use super::ast::{Expr, Prog, Stmt};
use super::run::{run_case, Case, Failure};

/// A case under shrinking: the program's structure and how it runs.
#[derive(Clone, Debug)]
pub struct Shrinkable {
    pub prog: Prog,
    pub case: Case,
}

impl Shrinkable {
    fn case(&self) -> Case {
        Case { source: self.prog.render(), ..self.case.clone() }
    }
}

/// Applies `op` to the `k`th statement in pre-order over nested blocks.
fn edit_stmt(b: &mut Vec<Stmt>, k: &mut usize, op: &dyn Fn(&mut Vec<Stmt>, usize) -> bool) -> Option<bool> {
    let mut i = 0;
    while i < b.len() {
        if *k == 0 {
            return Some(op(b, i));
        }
        *k -= 1;
        for blk in b[i].blocks_mut() {
            if let Some(r) = edit_stmt(blk, k, op) {
                return Some(r);
            }
        }
        i += 1;
    }
    None
}

fn count_stmts(b: &[Stmt]) -> usize {
    b.iter()
        .map(|s| {
            1 + match s {
                Stmt::If(_, x, y) => count_stmts(x) + count_stmts(y),
                Stmt::Every(_, x) | Stmt::For(_, _, _, x) => count_stmts(x),
                _ => 0,
            }
        })
        .sum()
}

fn stmt_edit(prog: &Prog, k: usize, op: &dyn Fn(&mut Vec<Stmt>, usize) -> bool) -> Option<Prog> {
    let mut p = prog.clone();
    let mut k = k;
    for b in p.blocks_mut() {
        if let Some(changed) = edit_stmt(b, &mut k, op) {
            return changed.then_some(p);
        }
    }
    None
}

fn remove(b: &mut Vec<Stmt>, i: usize) -> bool {
    b.remove(i);
    true
}

/// Replaces a block statement by one of its blocks (`which`: 0 the first, 1 an else).
fn unwrap(which: usize) -> impl Fn(&mut Vec<Stmt>, usize) -> bool {
    move |b: &mut Vec<Stmt>, i: usize| {
        let inner = match (&b[i], which) {
            (Stmt::If(_, t, _), 0) => t.clone(),
            (Stmt::If(_, _, e), 1) if !e.is_empty() => e.clone(),
            (Stmt::Every(_, x) | Stmt::For(_, _, _, x), 0) => x.clone(),
            _ => return false,
        };
        b.splice(i..=i, inner);
        true
    }
}

// The signature of every statement edit, which may also splice (`unwrap`).
#[allow(clippy::ptr_arg)]
fn one_iteration(b: &mut Vec<Stmt>, i: usize) -> bool {
    match &mut b[i] {
        Stmt::For(_, _, hi, _) if hi != "1" => {
            *hi = "1".into();
            true
        }
        Stmt::If(_, _, e) if !e.is_empty() => {
            e.clear();
            true
        }
        _ => false,
    }
}

/// Every smaller variant of `s`, biggest cuts first.
fn candidates(s: &Shrinkable) -> Vec<Shrinkable> {
    let mut out = Vec::new();
    let with_prog = |p: Prog| Shrinkable { prog: p, case: s.case.clone() };
    // Seeds and steps.
    if s.case.seeds.len() > 1 {
        for &seed in &s.case.seeds {
            let mut c = s.clone();
            c.case.seeds = vec![seed];
            out.push(c);
        }
    }
    for steps in 1..s.case.steps {
        let mut c = s.clone();
        c.case.steps = steps;
        out.push(c);
    }
    // Members.
    if s.prog.updates.len() > 1 {
        for i in 0..s.prog.updates.len() {
            let mut p = s.prog.clone();
            p.updates.remove(i);
            out.push(with_prog(p));
        }
    }
    if s.prog.prepare.is_some() {
        let mut p = s.prog.clone();
        p.prepare = None;
        out.push(with_prog(p));
    }
    for i in 0..s.prog.fns.len() {
        let mut p = s.prog.clone();
        p.fns.remove(i);
        out.push(with_prog(p));
    }
    for i in 0..s.prog.states.len() {
        let mut p = s.prog.clone();
        p.states.remove(i);
        out.push(with_prog(p));
    }
    for i in 0..s.prog.globals.len() {
        let mut p = s.prog.clone();
        p.globals.remove(i);
        out.push(with_prog(p));
    }
    for i in 1..s.prog.hypers.len() {
        let mut p = s.prog.clone();
        p.hypers.remove(i);
        out.push(with_prog(p));
    }
    // Parameters.
    if s.case.shapes.len() > 1 {
        for i in 0..s.case.shapes.len() {
            let mut c = s.clone();
            c.case.shapes.remove(i);
            out.push(c);
        }
    }
    for i in 0..s.case.shapes.len() {
        for j in 0..s.case.shapes[i].len() {
            let d = s.case.shapes[i][j];
            for smaller in [1, d / 2, d - 1] {
                if smaller >= 1 && smaller < d {
                    let mut c = s.clone();
                    c.case.shapes[i][j] = smaller;
                    out.push(c);
                }
            }
        }
    }
    // Statements.
    let n: usize = {
        let mut p = s.prog.clone();
        p.blocks_mut().iter().map(|b| count_stmts(b)).sum()
    };
    for k in 0..n {
        if let Some(p) = stmt_edit(&s.prog, k, &remove) {
            out.push(with_prog(p));
        }
    }
    for k in 0..n {
        for which in 0..2 {
            if let Some(p) = stmt_edit(&s.prog, k, &unwrap(which)) {
                out.push(with_prog(p));
            }
        }
        if let Some(p) = stmt_edit(&s.prog, k, &one_iteration) {
            out.push(with_prog(p));
        }
    }
    // Expressions: each node by each of its children, then by leaves.
    let total: usize = {
        let mut p = s.prog.clone();
        p.expr_roots_mut().iter().map(|e| e.size()).sum()
    };
    for k in 0..total {
        let mut p = s.prog.clone();
        let node = nth_node(&mut p, k).clone();
        let mut repl: Vec<Expr> = node.children().into_iter().cloned().collect();
        if !matches!(&node, Expr::Atom(_)) {
            repl.extend(["1", "0.5", "g", "p"].map(Expr::atom));
        }
        for r in repl {
            let mut q = s.prog.clone();
            *nth_node(&mut q, k) = r;
            out.push(with_prog(q));
        }
    }
    out
}

fn nth_node(p: &mut Prog, k: usize) -> &mut Expr {
    let mut k = k;
    for root in p.expr_roots_mut() {
        let size = root.size();
        if k < size {
            return root.nth_mut(&mut k).expect("the node exists");
        }
        k -= size;
    }
    panic!("no expression node {k}")
}

/// Shrinks `start` (which fails with `failure`) while it keeps failing the same way, within
/// `budget` trial runs; returns the smallest case found and its failure.
pub fn shrink(start: Shrinkable, failure: &Failure, budget: usize) -> (Shrinkable, Failure) {
    let want = failure.signature();
    let mut best = start;
    let mut best_failure = failure.clone();
    let mut tried = 0;
    'outer: loop {
        for c in candidates(&best) {
            if tried >= budget {
                break 'outer;
            }
            tried += 1;
            if let Err(f) = run_case(&c.case()) {
                if f.signature() == want {
                    best = Shrinkable { case: c.case(), prog: c.prog };
                    best_failure = f;
                    continue 'outer;
                }
            }
        }
        break;
    }
    best.case = best.case();
    (best, best_failure)
}
