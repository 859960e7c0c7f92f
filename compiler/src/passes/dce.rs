//! Dead-code elimination: an instruction lives if it is a store, a fold over every
//! parameter (`AcrossParams`), a `prepare` output some update reads, or an argument or guard
//! of a living instruction; the rest are removed.
//! Across functions: a `prepare` output no update reads is dropped, and an initialiser of
//! state that the variant's update neither reads nor writes is removed, so that state is
//! never allocated.

use crate::ir::*;

pub fn run(m: &mut Module) {
    for variant in &mut m.variants {
        dce(&mut variant.update, &[]);
        let used: Vec<usize> = variant
            .update
            .insts
            .iter()
            .filter_map(|i| match i.op {
                Op::Load(s) | Op::Store(Target::State(s)) => Some(s),
                _ => None,
            })
            .collect();
        let keep: Vec<bool> = variant
            .init
            .insts
            .iter()
            .map(|i| !matches!(i.op, Op::Store(Target::State(s)) if !used.contains(&s)))
            .collect();
        variant.init.retain(&keep);
        dce(&mut variant.init, &[]);
    }
    // `prepare` outputs no update reads are dropped, and the rest renumbered.
    let read: Vec<bool> = (0..m.prepare_outs.len())
        .map(|i| m.variants.iter().any(|v| v.update.insts.iter().any(|inst| inst.op == Op::PrepareOut(i))))
        .collect();
    let mut renumber = vec![0; read.len()];
    let mut next = 0;
    for (i, r) in read.iter().enumerate() {
        renumber[i] = next;
        next += usize::from(*r);
    }
    let mut i = 0;
    m.prepare_outs.retain(|_| {
        i += 1;
        read[i - 1]
    });
    for v in &mut m.variants {
        for inst in &mut v.update.insts {
            if let Op::PrepareOut(k) = &mut inst.op {
                *k = renumber[*k];
            }
        }
    }
    let outs: Vec<Value> = m.prepare_outs.iter().map(|o| o.1).collect();
    let map = dce(&mut m.prepare, &outs);
    for o in &mut m.prepare_outs {
        o.1 = map[o.1.index()].expect("prepare outputs are live");
    }
}

/// Removes dead instructions; returns where each old value went (`None`: removed).
pub fn dce(func: &mut Func, roots: &[Value]) -> Vec<Option<Value>> {
    let n = func.insts.len();
    let mut live = vec![false; n];
    for r in roots {
        live[r.index()] = true;
    }
    for i in (0..n).rev() {
        // A fold over every parameter lives though this function may not read it: every
        // variant's part joins one fold (`plan/folds.rs`), so each variant must make its part
        // (a policy's clip in front of a route that ignores its gradient).
        if !func.insts[i].op.is_pure() || matches!(func.insts[i].op, Op::AcrossParams(_)) {
            live[i] = true;
        }
        if live[i] {
            let inst = &func.insts[i];
            for a in inst.args.iter().chain(&inst.guard) {
                live[a.index()] = true;
            }
        }
    }
    let mut map = Vec::with_capacity(n);
    let mut next = 0;
    for &l in &live {
        map.push(l.then(|| {
            next += 1;
            Value::new(next - 1)
        }));
    }
    func.retain(&live);
    map
}
