//! Policies: one program that routes each parameter to one of several optimizers by its
//! role and rank. `load` inlines the files a policy `use`s (so a policy compiles, and an
//! artifact validates, from one self-contained text); `check` checks the policy and every
//! used optimizer; `merge` turns them into ONE optimizer whose names are prefixed by their
//! optimizer's (`muon.lr`, state `muon.buf`, function `muon.newton_schulz`) and whose
//! updates each know their owner, so the rest of the compiler sees one optimizer.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::rename::Renamer;
use crate::span::Span;
use std::collections::HashSet;
use std::path::Path;

/// The source of `path` with every `use "file.gd"` inlined as `use "file.gd" { <file's
/// text> }` after the file's own text (paths relative to the using file's folder), the used
/// files' own `use`s inlined the same way inside them, each file once. A file that uses
/// nothing comes back as it is. Errors: unreadable files, a used file that holds a policy,
/// uses nested deeper than [`MAX_USE_DEPTH`].
pub fn load(path: &Path) -> Result<String, String> {
    let mut seen = HashSet::new();
    seen.insert(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
    load_text(path, &mut seen, 0)
}

/// How deep `use`s may nest (a file that uses a file that uses ...).
pub const MAX_USE_DEPTH: usize = 16;

fn load_text(path: &Path, seen: &mut HashSet<std::path::PathBuf>, depth: usize) -> Result<String, String> {
    let source = crate::parse::read_source(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let Ok(file) = crate::parse(&source) else { return Ok(source) };
    let dir = path.parent().unwrap_or(Path::new("."));
    // The file's own text keeps every byte where it was (each bodiless `use` is blanked), so
    // diagnostics point at its lines; the used files follow it, inlined.
    let mut out = source.clone();
    let mut tail = String::new();
    for u in file.uses.iter().filter(|u| u.body.is_none()) {
        let (a, b) = (u.span.start as usize, u.span.end as usize);
        out.replace_range(a..b, &" ".repeat(b - a));
        let used = dir.join(&u.path);
        if !seen.insert(used.canonicalize().unwrap_or_else(|_| used.clone())) {
            continue;
        }
        if depth >= MAX_USE_DEPTH {
            return Err(format!(
                "{}: `use \"{}\"`: uses nest deeper than {MAX_USE_DEPTH} files",
                path.display(),
                u.path
            ));
        }
        let text =
            load_text(&used, seen, depth + 1).map_err(|e| format!("{}: `use \"{}\"`: {e}", path.display(), u.path))?;
        if crate::parse(&text).is_ok_and(|f| !f.policies.is_empty()) {
            return Err(format!(
                "{}: `use \"{}\"`: a used file holds optimizers, not a policy",
                path.display(),
                u.path
            ));
        }
        tail.push_str(&format!("\nuse \"{}\" {{\n{text}\n}}", u.path));
    }
    out.push_str(&tail);
    Ok(out)
}

/// The policy's own diagnostics (each used optimizer is checked on its own by the caller).
pub fn check(file: &File) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    let Some(policy) = file.policies.first() else { return d };
    for extra in file.policies.iter().skip(1) {
        d.push(
            Diagnostic::error("E0026", "a file holds one policy", extra.name.span)
                .label("a second policy")
                .hint("put each policy in its own .gd file"),
        );
    }
    if let Some(o) = file.optimizers.first() {
        d.push(
            Diagnostic::error("E0026", "a policy file defines no optimizer of its own", o.name.span)
                .label("an optimizer beside a policy")
                .hint("put the optimizer in its own file and `use` it"),
        );
    }
    let mut names: Vec<(String, Span)> = Vec::new();
    for u in &file.uses {
        let Some(body) = &u.body else {
            d.push(
                Diagnostic::error("E0026", format!("`use \"{}\"` was not loaded", u.path), u.span)
                    .label("file not read")
                    .hint("compile a policy from its path (`gdc build policy.gd`, `Program::compile_file`), which reads the files it uses"),
            );
            continue;
        };
        if let Some(o) = body.optimizers.last() {
            if names.iter().any(|(n, _)| *n == o.name.name) {
                d.push(
                    Diagnostic::error("E0026", format!("two used optimizers are named `{}`", o.name.name), u.span)
                        .label("a second one")
                        .hint("routes name optimizers: each used file's optimizer needs its own name"),
                );
            }
            names.push((o.name.name.clone(), u.span));
        }
    }
    // A global reduction folds over the parameters of one update; a policy steps each routed
    // optimizer's parameters apart, so it could not see them all.
    let routed: HashSet<&str> = policy.routes.iter().map(|r| r.target.name.as_str()).collect();
    if routed.len() > 1 {
        for u in &file.uses {
            let Some(o) = u.body.as_ref().and_then(|b| crate::compose::routed_program(file, b)) else { continue };
            let Some(route) = policy.routes.iter().find(|r| r.target.name == o.name.name) else { continue };
            // One error per route: the first thing the routed optimizer does over every
            // parameter (a global it assigns, else a global reduction).
            let why = match global_assigned_in_update(o) {
                Some(global) => Some((
                    format!("assigns global `{global}` in its update"),
                    "its update stores a value once per step",
                    "each routed optimizer steps its own parameters, so the global would be computed from only them: route everything to it, or assign the global in its `prepare`",
                )),
                None => uses_global_reduction(o).then(|| (
                    "uses a global reduction".to_string(),
                    "its update reduces over every parameter",
                    "each routed optimizer steps its own parameters, so `global_norm` would see only them: clip in front of every route with a policy part (`part clip_grad_norm`, examples/parts/transforms.gd), or route everything to it",
                )),
            };
            if let Some((what, label, hint)) = why {
                d.push(
                    Diagnostic::error(
                        "E0025",
                        format!("`{}` {what}, which a policy cannot give it", o.name.name),
                        route.target.span,
                    )
                    .label(label)
                    .note(policy.name.span, "this policy routes parameters to several optimizers")
                    .hint(hint),
                );
            }
        }
    }
    if policy.routes.is_empty() {
        d.push(
            Diagnostic::error("E0026", "the policy has no route", policy.name.span)
                .label("routes nothing")
                .hint("add routes such as `hidden [rows, cols] -> muon` and `_ -> adamw`"),
        );
    }
    for r in &policy.routes {
        if !names.iter().any(|(n, _)| *n == r.target.name) {
            let known = names.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            d.push(
                Diagnostic::error("E0002", format!("no used optimizer is named `{}`", r.target.name), r.target.span)
                    .label("not used")
                    .hint(format!("the used optimizers are {known}; `use \"file.gd\"` brings in another")),
            );
        }
        for role in &r.roles {
            if role.name != "_" && !crate::builtins::ROLES.contains(&role.name.as_str()) {
                d.push(
                    Diagnostic::error("E0018", format!("`{}` is not a role", role.name), role.span)
                        .label("unknown role")
                        .hint(format!("the roles are {}, or `_` for any", crate::builtins::ROLES.join(", "))),
                );
            }
        }
        if let Some(s) = &r.shape {
            let dims: Vec<&str> = s.dims.iter().map(|d| d.name.as_str()).collect();
            let ok = matches!((dims.as_slice(), s.ellipses.as_slice()), (["rows"], []) | (["rows", "cols"], []))
                || (dims == ["rows", "cols"] && s.is_batched());
            if !ok {
                d.push(
                    Diagnostic::error("E0020", "a route's shape is `[rows]`, `[rows, cols]` or `[..., rows, cols]`", s.span)
                        .label("not a route shape")
                        .hint("`[rows]` takes vectors, `[rows, cols]` matrices, `[..., rows, cols]` rank 2 or more; leave it out for any rank"),
                );
            }
        }
    }
    d
}

/// Merges a checked policy into one optimizer named after the policy: its routed optimizers'
/// names prefixed by theirs, except `shared`, the names of the policy's own parts
/// ([`crate::compose::stage_policy`]), declared once and kept.
pub fn merge(file: &File, shared: &[String]) -> File {
    let policy = &file.policies[0];
    let mut opt = Optimizer { routes: policy.routes.clone(), ..Optimizer::new(policy.name.clone(), policy.span) };
    let mut fns = Vec::new();
    let mut prepare = Vec::new();
    // The policy's parts' names, declared once (each routed optimizer holds a copy).
    let (mut shared_hypers, mut shared_states) = (Vec::new(), Vec::new());
    for body in file.uses.iter().filter_map(|u| u.body.as_ref()) {
        let Some(o) = crate::compose::routed_program(file, body) else { continue };
        let owner = opt.routed.len();
        let prefix = format!("{}.", o.name.name);
        let fn_names: HashSet<String> = body.fns.iter().map(|f| f.name.name.clone()).collect();
        let mut names: HashSet<String> = HashSet::new();
        names.extend(o.hypers.iter().map(|h| h.name.name.clone()));
        names.extend(o.states.iter().map(|s| s.name.name.clone()));
        names.extend(o.globals.iter().map(|g| g.name.name.clone()));
        for b in &o.prepares {
            for s in &b.stmts {
                match s {
                    Stmt::Let { names: ns, .. } => names.extend(ns.iter().map(|n| n.name.clone())),
                    Stmt::Var { name, .. } => {
                        names.insert(name.name.clone());
                    }
                    _ => {}
                }
            }
        }
        names.retain(|n| !shared.contains(n));
        let r = Renamer::prefixing(&prefix, &names, &fn_names);
        let fn_only = Renamer::prefixing(&prefix, None, &fn_names);
        for f in &body.fns {
            let mut f = f.clone();
            f.name.name = format!("{prefix}{}", f.name.name);
            fn_only.block(&mut f.body);
            fns.push(f);
        }
        let once = |name: &str, declared: &mut Vec<String>| {
            if !shared.iter().any(|n| n == name) {
                return Some(format!("{prefix}{name}"));
            }
            (!declared.iter().any(|d| d == name)).then(|| {
                declared.push(name.to_string());
                name.to_string()
            })
        };
        for h in &o.hypers {
            let mut h = h.clone();
            let Some(name) = once(&h.name.name, &mut shared_hypers) else { continue };
            h.name.name = name;
            opt.hypers.push(h);
        }
        for s in &o.states {
            let mut s = s.clone();
            let Some(name) = once(&s.name.name, &mut shared_states) else { continue };
            s.name.name = name;
            if let Some(e) = &mut s.init {
                r.expr(e);
            }
            opt.states.push(s);
        }
        // Inputs keep their names: the training code hands `a` to whichever optimizer a
        // parameter routes to (the checker reports two different declarations of one name).
        for i in &o.inputs {
            if !opt.inputs.iter().any(|x| x.name.name == i.name.name && x.optional == i.optional) {
                opt.inputs.push(i.clone());
            }
        }
        for g in &o.globals {
            let mut g = g.clone();
            g.name.name = format!("{prefix}{}", g.name.name);
            opt.globals.push(g);
        }
        for b in &o.prepares {
            let mut b = b.clone();
            r.block(&mut b);
            prepare.extend(b.stmts);
        }
        for u in &o.updates {
            let mut u = u.clone();
            u.owner = owner;
            r.block(&mut u.body);
            opt.updates.push(u);
        }
        opt.routed.push(o.name.name.clone());
    }
    if !prepare.is_empty() {
        opt.prepares.push(Block { stmts: prepare, span: policy.span });
    }
    File { fns, optimizers: vec![opt], uses: Vec::new(), policies: Vec::new() }
}

/// Whether an optimizer calls `global_norm`, `global_sum` or `global_max_abs`.
fn uses_global_reduction(o: &Optimizer) -> bool {
    let mut found = false;
    for u in &o.updates {
        visit_exprs(&u.body, &mut |e| {
            found |=
                matches!(&e.kind, ExprKind::Call(f, _) if crate::builtins::is(&f.name, crate::builtins::Kind::Global))
        });
    }
    found
}

/// The first global an update of `o` assigns (a value stored once per step), if any.
fn global_assigned_in_update(o: &Optimizer) -> Option<String> {
    fn in_block(b: &Block, globals: &[&str]) -> Option<String> {
        b.stmts.iter().find_map(|s| match s {
            Stmt::Assign { target, .. } if globals.contains(&target.name.as_str()) => Some(target.name.clone()),
            Stmt::If { then, otherwise, .. } => {
                in_block(then, globals).or_else(|| otherwise.as_ref().and_then(|o| in_block(o, globals)))
            }
            Stmt::For { body, .. } | Stmt::Every { body, .. } | Stmt::With { body, .. } => in_block(body, globals),
            _ => None,
        })
    }
    let globals: Vec<&str> = o.globals.iter().map(|g| g.name.name.as_str()).collect();
    o.updates.iter().find_map(|u| in_block(&u.body, &globals))
}
