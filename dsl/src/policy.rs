//! Policies: one program that routes each parameter to one of several optimizers by its
//! role and rank. `load` inlines the files a policy `use`s (so a policy compiles, and an
//! artifact validates, from one self-contained text); `check` checks the policy and every
//! used optimizer; `merge` turns them into ONE optimizer whose names are prefixed by their
//! optimizer's (`muon.lr`, state `muon.buf`, function `muon.newton_schulz`) and whose
//! updates each know their owner, so the rest of the compiler sees one optimizer.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use std::collections::HashSet;
use std::path::Path;

/// The source of `path` with every `use "file.gd"` of a policy inlined as
/// `use "file.gd" { <file's text> }` after the policy's own text (paths relative to `path`'s
/// folder). A file that uses nothing comes back as it is. Errors: unreadable files, a used file that itself uses
/// files.
pub fn load(path: &Path) -> Result<String, String> {
    let source = crate::parse::read_source(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let Ok(file) = crate::parse(&source) else { return Ok(source) };
    let dir = path.parent().unwrap_or(Path::new("."));
    // The policy's own text keeps every byte where it was (each bodiless `use` is blanked),
    // so diagnostics point at its lines; the used files follow it, inlined.
    let mut out = source.clone();
    let mut tail = String::new();
    for u in file.uses.iter().filter(|u| u.body.is_none()) {
        let used = dir.join(&u.path);
        let text = crate::parse::read_source(&used)
            .map_err(|e| format!("{}: `use \"{}\"`: cannot read {}: {e}", path.display(), u.path, used.display()))?;
        if crate::parse(&text).is_ok_and(|f| !f.uses.is_empty() || !f.policies.is_empty()) {
            return Err(format!(
                "{}: `use \"{}\"`: a used file must hold one optimizer, not a policy",
                path.display(),
                u.path
            ));
        }
        let (a, b) = (u.span.start as usize, u.span.end as usize);
        out.replace_range(a..b, &" ".repeat(b - a));
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
        if let Some(o) = body.optimizers.first() {
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
            let Some(o) = u.body.as_ref().and_then(|b| b.optimizers.first()) else { continue };
            let Some(route) = policy.routes.iter().find(|r| r.target.name == o.name.name) else { continue };
            if uses_global_reduction(o) {
                d.push(
                    Diagnostic::error(
                        "E0025",
                        format!("`{}` uses a global reduction, which a policy cannot give it", o.name.name),
                        route.target.span,
                    )
                    .label("its update reduces over every parameter")
                    .note(policy.name.span, "this policy routes parameters to several optimizers")
                        .hint("each routed optimizer steps its own parameters, so `global_norm` would see only them: clip in one optimizer over all parameters, or route everything to it"),
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

/// Merges a checked policy into one optimizer named after the policy.
pub fn merge(file: &File) -> File {
    let policy = &file.policies[0];
    let mut opt = Optimizer {
        name: policy.name.clone(),
        hypers: Vec::new(),
        states: Vec::new(),
        inputs: Vec::new(),
        globals: Vec::new(),
        prepares: Vec::new(),
        updates: Vec::new(),
        span: policy.span,
        routed: Vec::new(),
        routes: policy.routes.clone(),
    };
    let mut fns = Vec::new();
    let mut prepare = Vec::new();
    for (owner, body) in file.uses.iter().filter_map(|u| u.body.as_ref()).enumerate() {
        let Some(o) = body.optimizers.first() else { continue };
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
        let r = Renamer { prefix: &prefix, names: &names, fns: &fn_names };
        let fn_only = Renamer { prefix: &prefix, names: &HashSet::new(), fns: &fn_names };
        for f in &body.fns {
            let mut f = f.clone();
            f.name.name = format!("{prefix}{}", f.name.name);
            fn_only.block(&mut f.body);
            fns.push(f);
        }
        for h in &o.hypers {
            let mut h = h.clone();
            h.name.name = format!("{prefix}{}", h.name.name);
            opt.hypers.push(h);
        }
        for s in &o.states {
            let mut s = s.clone();
            s.name.name = format!("{prefix}{}", s.name.name);
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

/// Prefixes the names one used optimizer defines (and its functions' names) wherever they
/// are referred to. Nothing can shadow them (`let` never shadows), so every occurrence of
/// such a name refers to the optimizer's own.
struct Renamer<'a> {
    prefix: &'a str,
    names: &'a HashSet<String>,
    fns: &'a HashSet<String>,
}

impl Renamer<'_> {
    fn name(&self, n: &mut String) {
        if self.names.contains(n.as_str()) {
            *n = format!("{}{n}", self.prefix);
        }
    }

    fn block(&self, b: &mut Block) {
        for s in &mut b.stmts {
            self.stmt(s);
        }
    }

    fn stmt(&self, s: &mut Stmt) {
        match s {
            Stmt::Let { names, value, .. } => {
                for n in names {
                    self.name(&mut n.name);
                }
                self.expr(value);
            }
            Stmt::Var { name, value, .. } => {
                self.name(&mut name.name);
                self.expr(value);
            }
            Stmt::Assign { target, value, .. } => {
                self.name(&mut target.name);
                self.expr(value);
            }
            Stmt::If { cond, then, otherwise, .. } => {
                self.expr(cond);
                self.block(then);
                if let Some(o) = otherwise {
                    self.block(o);
                }
            }
            Stmt::For { start, end, body, .. } => {
                self.expr(start);
                self.expr(end);
                self.block(body);
            }
            Stmt::Every { period, phase, body, .. } => {
                self.expr(period);
                if let Some(p) = phase {
                    self.expr(p);
                }
                self.block(body);
            }
            Stmt::With { value, body, .. } => {
                self.expr(value);
                self.block(body);
            }
            Stmt::Return { value, .. } => self.expr(value),
        }
    }

    fn expr(&self, e: &mut Expr) {
        match &mut e.kind {
            ExprKind::Number(_) | ExprKind::Bool(_) => {}
            ExprKind::Name(n) => self.name(n),
            ExprKind::Unary(_, a) | ExprKind::Transpose(a) => self.expr(a),
            ExprKind::Binary(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
            ExprKind::Call(f, args) => {
                if self.fns.contains(&f.name) {
                    f.name = format!("{}{}", self.prefix, f.name);
                }
                if f.name == "has_role" {
                    return;
                }
                for a in args {
                    // `axis = 1`, `precision = f32`, `has_role(bias)`: not names to rename.
                    if a.name.is_none() {
                        self.expr(&mut a.value);
                    }
                }
            }
            ExprKind::Tuple(items) => {
                for x in items {
                    self.expr(x);
                }
            }
        }
    }
}

/// Whether an optimizer calls `global_norm`, `global_sum` or `global_max_abs`.
fn uses_global_reduction(o: &Optimizer) -> bool {
    fn expr(e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Number(_) | ExprKind::Bool(_) | ExprKind::Name(_) => false,
            ExprKind::Unary(_, a) | ExprKind::Transpose(a) => expr(a),
            ExprKind::Binary(_, a, b) => expr(a) || expr(b),
            ExprKind::Call(f, args) => f.name.starts_with("global_") || args.iter().any(|a| expr(&a.value)),
            ExprKind::Tuple(items) => items.iter().any(expr),
        }
    }
    fn block(b: &Block) -> bool {
        b.stmts.iter().any(|s| match s {
            Stmt::Let { value, .. }
            | Stmt::Var { value, .. }
            | Stmt::Assign { value, .. }
            | Stmt::Return { value, .. } => expr(value),
            Stmt::If { cond, then, otherwise, .. } => {
                expr(cond) || block(then) || otherwise.as_ref().is_some_and(block)
            }
            Stmt::For { start, end, body, .. } => expr(start) || expr(end) || block(body),
            Stmt::Every { period, phase, body, .. } => expr(period) || phase.as_ref().is_some_and(expr) || block(body),
            Stmt::With { value, body, .. } => expr(value) || block(body),
        })
    }
    o.updates.iter().any(|u| block(&u.body))
}
