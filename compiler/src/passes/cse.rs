//! Common-subexpression elimination: two pure instructions with the same operation,
//! arguments, type and guard compute the same value; later uses take the first.
//!
//!   v3 = mul v1, v2 ; v7 = mul v1, v2   =>   uses of v7 use v3

use crate::ir::*;
use std::collections::HashMap;

pub fn run(m: &mut Module) {
    for func in m.funcs_mut() {
        cse(func);
    }
}

pub fn cse(func: &mut Func) {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut to: Vec<Value> = func.values().collect();
    for v in func.values() {
        let inst = func.inst(v);
        if !inst.op.is_pure() {
            continue;
        }
        let args: Vec<Value> = inst.args.iter().map(|a| to[a.index()]).collect();
        let guard = inst.guard.map(|g| to[g.index()]);
        let key = format!("{:?}|{:?}|{:?}|{:?}", inst.op, args, guard, inst.ty);
        match seen.get(&key) {
            Some(first) => to[v.index()] = *first,
            None => {
                seen.insert(key, v);
            }
        }
    }
    func.substitute(&to);
}
