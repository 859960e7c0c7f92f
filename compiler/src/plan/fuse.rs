//! Fusion: cuts a function's tensor work into items. Instructions are visited in order; an
//! elementwise instruction, a reduction or a store joins the earliest kernel that has its
//! iteration domain and its guard and comes no earlier than its arguments' items — unless
//! it needs a reduction finished in that very kernel, which only a later item can read.
//! Otherwise it opens a new kernel. Matrix instructions become library calls. Then
//! elementwise work that reads only buffers and scalars sinks into its one consuming kernel
//! (`sink`), so it is not materialised; a kernel merges into the next one of its domain and
//! guard when nothing in between needs it (`merge`); and a select between a guarded store's
//! value and the state it replaces is read from that state after the store
//! (`stored_selects`). A store guarded by a host scalar fuses as a conditional write of the
//! kernel of its value. A value stored to a float32 state is read back from that state by
//! the items after the store (`stored_values`), so it needs no temporary, and elementwise
//! work on such values and on buffers sinks, chains of it whole, into its one consumer.
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
pub fn fuse(func: &Func, phases: &[Phase], bf16: &[bool]) -> Result<(Vec<Item>, Vec<Shape>), String> {
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

    let mut users_of: Vec<Vec<Value>> = vec![Vec::new(); n];
    for v in func.values() {
        for a in func.inst(v).args.iter().chain(&func.inst(v).guard) {
            users_of[a.index()].push(v);
        }
    }
    let stored = stored_values(func, &items, &item_of, &members, bf16);
    sink(func, phases, &items, &users_of, &stored, &mut item_of, &mut members);
    merge(func, &items, &red_deps, &users_of, &mut item_of, &mut members);
    let from_store = stored_selects(func, phases, &item_of, &mut members);
    // Merging may have moved stores: where each stored value is read back from now.
    let stored = stored_values(func, &items, &item_of, &members, bf16);
    let readable = |v: Value, it: usize| stored.get(&v).filter(|(_, st)| *st < it).map(|(b, _)| *b);

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
            let buffer = if let Some(b) = from_store.get(&a) {
                *b
            } else if let Some(b) = readable(a, it) {
                b
            } else if let Some(b) = leaf_buffer(&ai.op) {
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
        if ms.is_empty() {
            continue;
        }
        let guard = match &items[it] {
            Some((_, g)) => *g,
            None => ms.first().and_then(|m| fusion_guard(func, phases, *m)),
        };
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
                    // Users after the store read the value back from its state.
                    let used_elsewhere = users[m.index()].iter().any(|u| *u != it && readable(*m, *u).is_none());
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
    users: &[Vec<Value>],
    stored: &HashMap<Value, (Buffer, usize)>,
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
        // Unguarded work may sink into a guarded kernel: its one user runs only there.
        let own = fusion_guard(func, phases, v);
        if *domain != func.ty(v).shape || (*guard != own && own.is_some()) {
            continue;
        }
        let mut chain = vec![v];
        if !sinkable(func, phases, users, stored, &stored_in, item_of, (from, to), v, &mut chain)
            || chain.len() >= members[from].len()
        {
            continue;
        }
        members[from].retain(|m| !chain.contains(m));
        for m in chain {
            members[to].push(m);
            item_of[m.index()] = Some(to);
        }
        members[to].sort();
    }
}

/// Whether `v`'s arguments are available in item `to`: buffers not overwritten before it,
/// scalars, values of `to` itself, values read back from the state they were stored to
/// before `to`, or elementwise values of `from` used only by `v` that can move with it (added
/// to `chain`, the values that move).
#[allow(clippy::too_many_arguments)]
fn sinkable(
    func: &Func,
    phases: &[Phase],
    users: &[Vec<Value>],
    stored: &HashMap<Value, (Buffer, usize)>,
    stored_in: &HashMap<Buffer, usize>,
    item_of: &[Option<usize>],
    (from, to): (usize, usize),
    v: Value,
    chain: &mut Vec<Value>,
) -> bool {
    let inst = func.inst(v);
    inst.args.iter().chain(&inst.guard).all(|a| {
        let ai = func.inst(*a);
        if let Some(b) = leaf_buffer(&ai.op) {
            return stored_in.get(&b).is_none_or(|s| *s >= to);
        }
        if phases[a.index()] != Phase::Kernel || item_of[a.index()] == Some(to) || chain.contains(a) {
            return true;
        }
        if stored.get(a).is_some_and(|(_, st)| *st < to) {
            return true;
        }
        let with_v = item_of[a.index()] == Some(from)
            && ai.op.is_elementwise()
            && !matches!(ai.op, Op::Store(_))
            && ai.guard.is_none()
            && func.ty(*a).shape == func.ty(v).shape
            && users[a.index()].iter().all(|u| *u == v);
        if !with_v {
            return false;
        }
        chain.push(*a);
        sinkable(func, phases, users, stored, stored_in, item_of, (from, to), *a, chain)
    })
}

/// The values stored, unguarded, to a float32 state by an unguarded kernel, with the state's
/// buffer and the store's item: after that item the state holds exactly the value. (A bf16
/// state holds it rounded; the parameter may be a bf16 copy.) Only a value of the state's
/// own type (that of a load of it) counts, not one broadcast into it.
fn stored_values(
    func: &Func,
    items: &[Option<(Shape, Option<Value>)>],
    item_of: &[Option<usize>],
    members: &[Vec<Value>],
    bf16: &[bool],
) -> HashMap<Value, (Buffer, usize)> {
    let mut load_ty = HashMap::new();
    for v in func.values() {
        if let Op::Load(s) = func.inst(v).op {
            load_ty.insert(s, func.ty(v).clone());
        }
    }
    let mut out = HashMap::new();
    for (it, ms) in members.iter().enumerate() {
        if !matches!(&items[it], Some((_, None))) {
            continue;
        }
        for m in ms {
            let inst = func.inst(*m);
            let Op::Store(Target::State(s)) = inst.op else { continue };
            let x = inst.args[0];
            let same_ty = load_ty.get(&s).is_some_and(|t| t == func.ty(x));
            if inst.guard.is_none() && !bf16.get(s).copied().unwrap_or(true) && same_ty && item_of[x.index()].is_some()
            {
                out.insert(x, (Buffer::State(s), it));
            }
        }
    }
    out
}

/// Merges a kernel into the next kernel of its domain and guard when nothing between them
/// depends on it or writes what it reads: `if present(h) { hess = ... }` between two passes
/// over the same tensors no longer splits them (Sophia-G's step becomes one pass, and a
/// refresh a second, guarded one). A kernel whose full reduction the later one reads stays
/// apart (a reduction is only complete when its kernel ends).
fn merge(
    func: &Func,
    items: &[Option<(Shape, Option<Value>)>],
    red_deps: &[BTreeSet<usize>],
    users: &[Vec<Value>],
    item_of: &mut [Option<usize>],
    members: &mut [Vec<Value>],
) {
    // The leaf buffers each item reads and the ones it stores.
    let touched = |ms: &[Value]| -> (Vec<Buffer>, Vec<Buffer>) {
        let (mut reads, mut stores) = (Vec::new(), Vec::new());
        for m in ms {
            let inst = func.inst(*m);
            match inst.op {
                Op::Store(Target::Param) => stores.push(Buffer::Param),
                Op::Store(Target::State(s)) => stores.push(Buffer::State(s)),
                _ => {}
            }
            for a in inst.args.iter().chain(&inst.guard) {
                if let Some(b) = leaf_buffer(&func.inst(*a).op) {
                    reads.push(b);
                }
            }
        }
        (reads, stores)
    };
    for i in 0..items.len() {
        let Some(key) = &items[i] else { continue };
        if members[i].is_empty() {
            continue;
        }
        let Some(j) = (i + 1..items.len()).find(|j| items[*j].as_ref() == Some(key) && !members[*j].is_empty()) else {
            continue;
        };
        let (reads_i, _) = touched(&members[i]);
        let between_ok = (i + 1..j).all(|k| {
            let (_, stores_k) = touched(&members[k]);
            !stores_k.iter().any(|b| reads_i.contains(b))
        });
        // Users through scalars outside any item too (`global_norm`'s fold, device scalars).
        let mut used_between = false;
        let mut stack: Vec<Value> = members[i].clone();
        let mut seen: BTreeSet<Value> = BTreeSet::new();
        while let Some(v) = stack.pop() {
            for u in &users[v.index()] {
                match item_of[u.index()] {
                    Some(it) => used_between |= it > i && it < j,
                    None if seen.insert(*u) => stack.push(*u),
                    None => {}
                }
            }
        }
        let reductions_i: BTreeSet<usize> =
            members[i].iter().filter(|m| is_reduce(&func.inst(**m).op)).map(|m| m.index()).collect();
        let reads_reduction = members[j].iter().any(|m| !red_deps[m.index()].is_disjoint(&reductions_i));
        if !between_ok || used_between || reads_reduction {
            continue;
        }
        let moved = std::mem::take(&mut members[i]);
        for m in &moved {
            item_of[m.index()] = Some(j);
        }
        members[j].extend(moved);
        members[j].sort();
    }
}

/// `select(c, x, load s)` read after the item that stores `x` to `s` under the host guard `c`
/// is that state's buffer after the store (`x` where `c` held, the untouched state where it
/// did not): such selects are read from the buffer instead of computed from a temporary of
/// `x` and a saved copy of `s`. Returns them with their buffers, out of every kernel.
fn stored_selects(
    func: &Func,
    phases: &[Phase],
    item_of: &[Option<usize>],
    members: &mut [Vec<Value>],
) -> HashMap<Value, Buffer> {
    let mut stores: HashMap<(usize, Value, Value), usize> = HashMap::new();
    for v in func.values() {
        let inst = func.inst(v);
        if let (Op::Store(Target::State(s)), Some(g), Some(it)) = (&inst.op, inst.guard, item_of[v.index()]) {
            stores.insert((*s, inst.args[0], g), it);
        }
    }
    let mut out = HashMap::new();
    for v in func.values() {
        let inst = func.inst(v);
        let (Op::Select, Some(it)) = (&inst.op, item_of[v.index()]) else { continue };
        let (c, x, l) = (inst.args[0], inst.args[1], inst.args[2]);
        let Op::Load(s) = func.inst(l).op else { continue };
        if !matches!(phases[c.index()], Phase::Host | Phase::Param) || func.ty(v) != func.ty(l) {
            continue;
        }
        if stores.get(&(s, x, c)).is_some_and(|st| *st < it) {
            members[it].retain(|m| *m != v);
            out.insert(v, Buffer::State(s));
        }
    }
    out
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
