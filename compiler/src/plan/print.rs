//! The stable text form of a plan: the header, the `prepare` block, then per variant its
//! initialiser plan and step plan, each as host scalars, per-parameter scalars and items (the
//! step plan's gradient check last, marked).

use super::*;
use crate::ir::print::{header_text, inst_text};
use crate::ir::{pattern_text, Module};
use std::fmt::Write;

fn buffer_text(m: &Module, b: Buffer) -> String {
    match b {
        Buffer::Param => "p".into(),
        Buffer::Grad => "g".into(),
        Buffer::State(s) => m.states[s].name.clone(),
        Buffer::Temp(t) => format!("t{t}"),
        Buffer::Input(i) => format!("input {}", m.inputs[i].name),
    }
}

fn func_text(out: &mut String, m: &Module, func: &Func, plan: &FuncPlan, indent: &str) {
    if !plan.host.is_empty() {
        let when = if func.kind == crate::ir::FuncKind::Init { "once" } else { "once per step" };
        let _ = writeln!(out, "{indent}host, {when}:");
        for v in &plan.host {
            let _ = writeln!(out, "{indent}  {}", inst_text(m, func, *v));
        }
    }
    if !plan.param.is_empty() {
        let _ = writeln!(out, "{indent}host, once per parameter:");
        for v in &plan.param {
            let _ = writeln!(out, "{indent}  {}", inst_text(m, func, *v));
        }
    }
    for (t, shape) in plan.temps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{indent}temp t{t}: {}",
            crate::ir::print::type_text(&gdc_dsl::types::Ty::num(shape.clone()))
        );
    }
    for (ii, item) in plan.items.iter().enumerate() {
        let check = if plan.check.is_some_and(|c| c.item == ii) { " (gradient check, run apart)" } else { "" };
        match item {
            Item::Kernel(k) => {
                let reads: Vec<String> = k.inputs.iter().map(|(v, b)| format!("{}={v}", buffer_text(m, *b))).collect();
                let writes: Vec<String> = k
                    .outputs
                    .iter()
                    .map(|o| {
                        let guard = o.guard.map(|g| format!(" if {g}")).unwrap_or_default();
                        format!("{}={}{guard}", buffer_text(m, o.buffer), o.value)
                    })
                    .collect();
                let guard = k.guard.map(|g| format!(" if {g}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{indent}kernel k{} over {}{guard}{check}:",
                    k.id,
                    crate::ir::print::type_text(&gdc_dsl::types::Ty::num(k.domain.clone()))
                );
                let _ = writeln!(
                    out,
                    "{indent}  reads {}",
                    if reads.is_empty() { "nothing".into() } else { reads.join(", ") }
                );
                for v in &k.scalars {
                    let _ = writeln!(out, "{indent}  scalar {}", inst_text(m, func, *v));
                }
                for v in &k.body {
                    let _ = writeln!(out, "{indent}  {}", inst_text(m, func, *v));
                }
                let _ = writeln!(
                    out,
                    "{indent}  writes {}",
                    if writes.is_empty() { "nothing".into() } else { writes.join(", ") }
                );
                if !k.reductions.is_empty() {
                    let r: Vec<String> = k.reductions.iter().map(|v| v.to_string()).collect();
                    let _ = writeln!(out, "{indent}  reduces {}", r.join(", "));
                }
            }
            Item::Lib(l) => {
                let guard = l.guard.map(|g| format!(" if {g}")).unwrap_or_default();
                let reads: Vec<String> = l.inputs.iter().map(|(v, b)| format!("{}={v}", buffer_text(m, *b))).collect();
                let _ = writeln!(out, "{indent}call k{}{guard}: reads {}", l.id, reads.join(", "));
                for v in &l.scalars {
                    let _ = writeln!(out, "{indent}  scalar {}", inst_text(m, func, *v));
                }
                let _ = writeln!(out, "{indent}  {}", inst_text(m, func, l.inst));
                let _ = writeln!(out, "{indent}  writes {}={}", buffer_text(m, l.output), l.inst);
            }
        }
    }
    if !plan.after.is_empty() {
        let _ = writeln!(out, "{indent}host, once after every parameter's step:");
        for v in &plan.after {
            let _ = writeln!(out, "{indent}  {}", inst_text(m, func, *v));
        }
    }
}

/// The whole plan as text.
pub fn plan_text(plan: &Plan) -> String {
    let m = &plan.module;
    let mut out = header_text(m);
    if !plan.prepare.is_empty() {
        let _ = writeln!(out, "\nprepare, once per step:");
        for v in &plan.prepare {
            let _ = writeln!(out, "  {}", inst_text(m, &m.prepare, *v));
        }
        for (name, v) in &m.prepare_outs {
            let _ = writeln!(out, "  out {name} = {v}");
        }
    }
    for (vp, variant) in plan.variants.iter().zip(&m.variants) {
        let p = pattern_text(vp.pattern);
        let _ = writeln!(out, "\ninit{p}:");
        func_text(&mut out, m, &variant.init, &vp.init, "  ");
        let _ = writeln!(out, "\nupdate{p}:");
        func_text(&mut out, m, &variant.update, &vp.update, "  ");
    }
    out
}
