//! Fusion: cuts a function's tensor work into items. Instructions are visited in order; an
//! elementwise instruction, a reduction or a store joins the earliest kernel that has its
//! iteration domain and its guard and comes no earlier than its arguments' items — unless
//! it needs a reduction finished in that very kernel, which only a later item can read.
//! Otherwise it opens a new kernel. Matrix instructions become library calls. Then
//! elementwise work that reads only buffers and scalars sinks into its one consuming kernel
//! (`sink`), so it is not materialised. A store
//! guarded by a host scalar fuses as a conditional write of the kernel of its value.
//!
//! Loads of the parameter, the gradient and state are not instructions of any one kernel:
//! each kernel that uses one reads the buffer itself. A value used outside the item that
//! computes it is materialised: full reductions into slots, everything else into a
//! temporary buffer.

use super::{Buffer, Item, Kernel, LibCall, Output, Phase};
use crate::ir::{Func, Op, Target, Value};
use gdc_dsl::types::Shape;
use std::collections::{BTreeSet, HashMap};

fn leaf_buffer(op: &Op) -> Option<Buffer> {
    match op {
        Op::Param => Some(Buffer::Param),
        Op::Grad => Some(Buffer::Grad),
        Op::Load(s) => Some(Buffer::State(*s)),
        Op::Input(i) => Some(Buffer::Input(*i)),
        _ => None,
    }
}

fn is_reduce(op: &Op) -> bool {
    matches!(op, Op::Reduce(..))
}

/// The item each kernel instruction is placed in, then the items with their buffers.
pub fn fuse(func: &Func, phases: &[Phase]) -> Result<(Vec<Item>, Vec<Shape>), String> {
    let n = func.insts.len();
    // Reductions each value depends on, transitively.
    let mut red_deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for v in func.values() {
        let inst = func.inst(v);
        let mut deps = BTreeSet::new();
        for a in inst.args.iter().chain(&inst.guard) {
            deps.extend(red_deps[a.index()].iter().copied());
            if is_reduce(&func.inst(*a).op) {
                deps.insert(a.index());
            }
        }
        red_deps[v.index()] = deps;
    }

    let mut item_of: Vec<Option<usize>> = vec![None; n];
    // Per item: Some((domain, guard)) for kernels, None for library calls.
    let mut items: Vec<Option<(Shape, Option<Value>)>> = Vec::new();
    let mut members: Vec<Vec<Value>> = Vec::new();
    for v in func.values() {
        let inst = func.inst(v);
        if phases[v.index()] != Phase::Kernel || leaf_buffer(&inst.op).is_some() {
            continue;
        }
        // Items this instruction must follow (strictly) or may share.
        let mut after = 0usize; // the item index must be >= after
        let mut strictly_after: Option<usize> = None;
        // A store iterates over its value (lowering broadcast it to the target's shape), a
        // reduction over its argument, anything else over its result.
        let domain = match &inst.op {
            Op::Store(_) | Op::Reduce(..) => func.ty(inst.args[0]).shape.clone(),
            _ => func.ty(v).shape.clone(),
        };
        let key_guard = fusion_guard(func, phases, v);
        for r in &red_deps[v.index()] {
            if let Some(it) = item_of[*r] {
                strictly_after = Some(strictly_after.map_or(it, |s: usize| s.max(it)));
            }
        }
        for a in inst.args.iter().chain(&inst.guard) {
            if let Some(it) = item_of[a.index()] {
                match &items[it] {
                    Some((d, g)) if *d == domain && *g == key_guard && !is_reduce(&func.inst(*a).op) => {
                        after = after.max(it)
                    }
                    _ => strictly_after = Some(strictly_after.map_or(it, |s: usize| s.max(it))),
                }
            }
        }
        let lower = match strictly_after {
            Some(s) => after.max(s + 1),
            None => after,
        };
        let is_matrix = !inst.op.is_elementwise() && !matches!(inst.op, Op::Reduce(..) | Op::Store(_));
        let key = Some((domain.clone(), key_guard));
        let chosen = if is_matrix {
            None
        } else {
            items.iter().enumerate().skip(lower).find(|(_, k)| **k == key).map(|(it, _)| it)
        };
        let it = chosen.unwrap_or_else(|| {
            items.push(if is_matrix { None } else { Some((domain.clone(), key_guard)) });
            members.push(Vec::new());
            items.len() - 1
        });
        item_of[v.index()] = Some(it);
        members[it].push(v);
    }

    sink(func, phases, &items, &mut item_of, &mut members);

    // Materialise values used outside their item.
    let mut temps: Vec<Shape> = Vec::new();
    let mut temp_of: HashMap<Value, usize> = HashMap::new();
    let mut users: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (it, ms) in members.iter().enumerate() {
        for m in ms {
            let inst = func.inst(*m);
            for a in inst.args.iter().chain(&inst.guard) {
                users[a.index()].insert(it);
            }
        }
    }
    let mut out = Vec::new();
    // Stores per buffer, to detect a later read of an overwritten buffer.
    let mut store_item: HashMap<Buffer, usize> = HashMap::new();
    for (it, ms) in members.iter().enumerate() {
        for m in ms {
            if let Op::Store(t) = func.inst(*m).op {
                let b = match t {
                    Target::Param => Buffer::Param,
                    Target::State(s) => Buffer::State(s),
                    Target::Global(_) => continue,
                };
                store_item.insert(b, it);
            }
        }
    }
    // A load read after its buffer was overwritten (`let old = m; m = ...; ... old ...` with
    // the last use past a reduction) is copied to a temporary by an unguarded kernel of its
    // own, just before the overwriting item.
    let mut saved: HashMap<Value, usize> = HashMap::new();
    let mut saves_before: HashMap<usize, Vec<(Value, Buffer, usize)>> = HashMap::new();
    for v in func.values() {
        let inst = func.inst(v);
        let Some(b) = leaf_buffer(&inst.op) else { continue };
        if inst.ty.as_ref().is_some_and(|t| t.is_scalar()) {
            continue;
        }
        if let Some(&s) = store_item.get(&b) {
            if users[v.index()].iter().any(|u| *u > s) {
                temps.push(func.ty(v).shape.clone());
                saved.insert(v, temps.len() - 1);
                saves_before.entry(s).or_default().push((v, b, temps.len() - 1));
            }
        }
    }
    let mut next_id = members.len();
    for (it, ms) in members.iter().enumerate() {
        for (v, b, t) in saves_before.remove(&it).unwrap_or_default() {
            out.push(Item::Kernel(Kernel {
                id: next_id,
                guard: None,
                domain: func.ty(v).shape.clone(),
                inputs: vec![(v, b)],
                scalars: Vec::new(),
                body: Vec::new(),
                outputs: vec![Output { value: v, buffer: Buffer::Temp(t), guard: None }],
                reductions: Vec::new(),
            }));
            next_id += 1;
        }
        let mut inputs: Vec<(Value, Buffer)> = Vec::new();
        let mut scalars: BTreeSet<Value> = BTreeSet::new();
        let add_input = |inputs: &mut Vec<(Value, Buffer)>,
                         temps: &mut Vec<Shape>,
                         temp_of: &mut HashMap<Value, usize>,
                         a: Value|
         -> Result<(), String> {
            let ai = func.inst(a);
            let buffer = if let Some(b) = leaf_buffer(&ai.op) {
                if ai.ty.as_ref().is_some_and(|t| t.is_scalar()) {
                    return Ok(());
                }
                match saved.get(&a) {
                    Some(t) if store_item.get(&b).is_some_and(|s| *s < it) => Buffer::Temp(*t),
                    _ => b,
                }
            } else if item_of[a.index()].is_some_and(|i| i != it)
                && !(is_reduce(&ai.op) && ai.ty.as_ref().is_some_and(|t| t.is_scalar()))
            {
                let t = *temp_of.entry(a).or_insert_with(|| {
                    temps.push(func.ty(a).shape.clone());
                    temps.len() - 1
                });
                Buffer::Temp(t)
            } else {
                return Ok(());
            };
            if !inputs.iter().any(|(v, _)| *v == a) {
                inputs.push((a, buffer));
            }
            Ok(())
        };
        for m in ms {
            let inst = func.inst(*m);
            for a in inst.args.iter().chain(&inst.guard) {
                add_input(&mut inputs, &mut temps, &mut temp_of, *a)?;
                collect_scalars(func, phases, *a, &mut scalars);
            }
        }
        let guard = ms.first().and_then(|m| fusion_guard(func, phases, *m));
        if let Some(g) = guard {
            collect_scalars(func, phases, g, &mut scalars);
        }
        // Device scalars may read state buffers (scalar state) directly: no input needed.
        let scalars: Vec<Value> = scalars.into_iter().collect();
        match &items[it] {
            None => {
                let inst = ms[0];
                let t = *temp_of.entry(inst).or_insert_with(|| {
                    temps.push(func.ty(inst).shape.clone());
                    temps.len() - 1
                });
                out.push(Item::Lib(LibCall { id: it, guard, scalars, inst, inputs, output: Buffer::Temp(t) }));
            }
            Some((domain, _)) => {
                let mut outputs = Vec::new();
                let mut reductions = Vec::new();
                for m in ms {
                    let inst = func.inst(*m);
                    match inst.op {
                        Op::Store(Target::Param) => {
                            outputs.push(Output { value: inst.args[0], buffer: Buffer::Param, guard: inst.guard })
                        }
                        Op::Store(Target::State(s)) => {
                            outputs.push(Output { value: inst.args[0], buffer: Buffer::State(s), guard: inst.guard })
                        }
                        _ => {}
                    }
                    let used_elsewhere = users[m.index()].iter().any(|u| *u != it);
                    let scalar_red = is_reduce(&inst.op) && inst.ty.as_ref().is_some_and(|t| t.is_scalar());
                    // A full reduction feeds device scalars, which any later item may read.
                    if scalar_red {
                        reductions.push(*m);
                    } else if used_elsewhere {
                        let t = *temp_of.entry(*m).or_insert_with(|| {
                            temps.push(func.ty(*m).shape.clone());
                            temps.len() - 1
                        });
                        outputs.push(Output { value: *m, buffer: Buffer::Temp(t), guard: None });
                    }
                }
                out.push(Item::Kernel(Kernel {
                    id: it,
                    guard,
                    domain: domain.clone(),
                    inputs,
                    scalars,
                    body: ms.clone(),
                    outputs,
                    reductions,
                }));
            }
        }
    }
    Ok((out, temps))
}

/// The guard that decides which kernel an instruction may join: its own, except for a store
/// guarded by a host scalar, which takes its value's (the write itself is conditional).
/// Moves elementwise work that reads only buffers and scalars (`weight_decay * p`) from the
/// earliest kernel that could hold it to the one later kernel that uses it, when that kernel
/// has its domain and guard: computed where it is used, it needs no temporary (which would
/// cost a write and a read of a whole tensor). Visited last to first, so chains sink whole.
/// A value whose buffer is overwritten before that kernel, or whose kernel would be left
/// empty, stays.
fn sink(
    func: &Func,
    phases: &[Phase],
    items: &[Option<(Shape, Option<Value>)>],
    item_of: &mut [Option<usize>],
    members: &mut [Vec<Value>],
) {
    let mut stored_in: HashMap<Buffer, usize> = HashMap::new();
    for (it, ms) in members.iter().enumerate() {
        for m in ms {
            match func.inst(*m).op {
                Op::Store(Target::Param) => {
                    stored_in.insert(Buffer::Param, it);
                }
                Op::Store(Target::State(s)) => {
                    stored_in.insert(Buffer::State(s), it);
                }
                _ => {}
            }
        }
    }
    let mut users: Vec<Vec<Value>> = vec![Vec::new(); func.insts.len()];
    for v in func.values() {
        let inst = func.inst(v);
        for a in inst.args.iter().chain(&inst.guard) {
            users[a.index()].push(v);
        }
    }
    for v in func.values().collect::<Vec<_>>().into_iter().rev() {
        let inst = func.inst(v);
        let Some(from) = item_of[v.index()] else { continue };
        if !inst.op.is_elementwise() || matches!(inst.op, Op::Store(_)) || members[from].len() < 2 {
            continue;
        }
        let mut to = None;
        let single = users[v.index()].iter().all(|u| {
            let it = item_of[u.index()];
            match (it, to) {
                (None, _) => false,
                (Some(i), None) => {
                    to = Some(i);
                    true
                }
                (Some(i), Some(t)) => i == t,
            }
        });
        let Some(to) = to.filter(|t| single && *t > from) else { continue };
        let Some((domain, guard)) = &items[to] else { continue };
        if *domain != func.ty(v).shape || *guard != fusion_guard(func, phases, v) {
            continue;
        }
        let movable = inst.args.iter().chain(&inst.guard).all(|a| {
            let ai = func.inst(*a);
            match leaf_buffer(&ai.op) {
                Some(b) => stored_in.get(&b).is_none_or(|s| *s >= to),
                None => phases[a.index()] != Phase::Kernel || item_of[a.index()] == Some(to),
            }
        });
        if !movable {
            continue;
        }
        members[from].retain(|m| *m != v);
        members[to].push(v);
        members[to].sort();
        item_of[v.index()] = Some(to);
    }
}

fn fusion_guard(func: &Func, phases: &[Phase], v: Value) -> Option<Value> {
    let inst = func.inst(v);
    match (&inst.op, inst.guard) {
        (Op::Store(_), Some(g)) if matches!(phases[g.index()], Phase::Host | Phase::Param) => {
            func.inst(inst.args[0]).guard
        }
        _ => inst.guard,
    }
}

/// Adds `v` and the device scalars it depends on (in definition order) to `out`.
fn collect_scalars(func: &Func, phases: &[Phase], v: Value, out: &mut BTreeSet<Value>) {
    if phases[v.index()] != Phase::Device || out.contains(&v) {
        return;
    }
    out.insert(v);
    let inst = func.inst(v);
    for a in inst.args.iter().chain(&inst.guard) {
        collect_scalars(func, phases, *a, out);
    }
}
