//! Composition: an optimizer made of parts (`part adamw`, `part adam = scale_by_adam`) or a
//! wrapper given its optimizer (`optimizer lookahead_adam = lookahead(adam)`) becomes ONE
//! optimizer, each part's statements inlined where the update calls it. The checker, the
//! passes and the code generators then see one optimizer and fuse it as if it were written
//! out by hand, so a composed optimizer runs the same kernels as the hand-written one.
//!
//! A part's hyperparameters, state, globals, inputs and `prepare` values keep their names
//! (`part adamw`) or take its name as a prefix (`part adam = scale_by_adam`: `adam.beta1`,
//! state `adam.m`); its locals are always prefixed, so they never meet the caller's. A call
//! `adam(p, u, beta1 = b)` runs the part's update on `p` and `u`: an optimizer gives the new
//! value of its parameter, a transformation (an update that ends in `return`) gives the
//! direction it returns. A hyperparameter bound at the call is that expression there and is
//! no longer a hyperparameter of the whole.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::rename::Renamer;
use crate::span::Span;
use std::collections::{HashMap, HashSet};

/// Where a part's update was inlined: its body as written, the call, the part's name. A
/// diagnostic the checker reports inside the body gets a note at the call ([`annotate`]).
#[derive(Clone, Debug)]
pub struct CallSite {
    pub body: Span,
    pub call: Span,
    pub part: String,
}

/// Adds to each diagnostic inside an inlined part a note at the call that inlined it (and at
/// the call of the part that called that one, for nested parts).
pub fn annotate(diags: &mut [Diagnostic], sites: &[CallSite]) {
    for d in diags {
        let mut at = d.span;
        for _ in 0..sites.len() {
            let Some(site) = sites.iter().find(|s| s.body.start <= at.start && at.end <= s.body.end) else { break };
            d.notes.push((site.call, format!("in part `{}`, called here", site.part)));
            at = site.call;
        }
    }
}

/// An optimizer with its parts inlined, and the functions it calls.
#[derive(Clone)]
struct Unit {
    opt: Optimizer,
    fns: Vec<FnDef>,
}

/// An optimizer as written, with its file's functions.
#[derive(Clone, Copy)]
struct Source<'a> {
    opt: &'a Optimizer,
    fns: &'a [FnDef],
}

/// Whether a file composes: it uses files, or one of its optimizers has parts, is a wrapper,
/// or instantiates one. A file that does not is left to the checker as it is.
fn composes(file: &File) -> bool {
    !file.uses.is_empty()
        || file
            .optimizers
            .iter()
            .any(|o| !o.parts.is_empty() || !o.part_params.is_empty() || o.instance.is_some() || returns(o).is_some())
}

/// An optimizer file with its program (the last optimizer) expanded: one optimizer and
/// the functions it calls. A file that composes nothing comes back as it is.
pub fn expand(file: &File) -> (File, Vec<Diagnostic>, Vec<CallSite>) {
    if !composes(file) {
        return (file.clone(), Vec::new(), Vec::new());
    }
    let mut c = Composer::new(file);
    for u in file.uses.iter().filter(|u| u.body.is_none()) {
        c.diags.push(
            Diagnostic::error("E0026", format!("`use \"{}\"` was not loaded", u.path), u.span)
                .label("file not read")
                .hint("compile the file from its path (`gdc build file.gd`, `Program::compile_file`), which reads the files it uses"),
        );
    }
    let Some(program) = file.optimizers.last() else {
        return (file.clone(), c.diags, c.sites);
    };
    let out = c.program(program, &file.fns);
    for o in &file.optimizers[..file.optimizers.len() - 1] {
        if !c.visited.contains(&o.name.name) {
            c.diags.push(
                Diagnostic::error(
                    "E0017",
                    format!("`{}` is not a part of `{}`", o.name.name, program.name.name),
                    o.name.span,
                )
                .label("an optimizer the program does not use")
                .note(program.name.span, "the file's program: its last optimizer")
                .hint(format!(
                    "a file compiles its last optimizer; call `{}` from it as a part, or move it to its own file",
                    o.name.name
                )),
            );
        }
    }
    match out {
        Some(unit) if c.diags.is_empty() => (
            File { fns: unit.fns, optimizers: vec![unit.opt], uses: Vec::new(), policies: Vec::new() },
            c.diags,
            c.sites,
        ),
        _ => (file.clone(), c.diags, c.sites),
    }
}

/// A policy file with each routed optimizer expanded (parts found anywhere in the files the
/// policy brought in). A used file's program is its last optimizer; a used file whose
/// program no route names (a library of parts, such as `transforms.gd`) is left as it is.
pub fn expand_policy(file: &File) -> (File, Vec<Diagnostic>, Vec<CallSite>) {
    let mut c = Composer::new(file);
    let mut out = file.clone();
    for (u, original) in out.uses.iter_mut().zip(&file.uses) {
        let Some(body) = &original.body else { continue };
        let Some(program) = routed_program(file, body) else { continue };
        if !composes(body) {
            continue;
        }
        if let Some(unit) = c.program(program, &body.fns) {
            u.body = Some(File { fns: unit.fns, optimizers: vec![unit.opt], uses: Vec::new(), policies: Vec::new() });
        }
    }
    let diags = std::mem::take(&mut c.diags);
    (out, diags, c.sites)
}

/// The program of used file `body` (its last optimizer) when a route of `file`'s policy
/// names it.
pub fn routed_program<'f>(file: &File, body: &'f File) -> Option<&'f Optimizer> {
    let program = body.optimizers.last()?;
    let policy = file.policies.first()?;
    policy.routes.iter().any(|r| r.target.name == program.name.name).then_some(program)
}

/// A policy whose routed optimizers were expanded ([`expand_policy`]) with its parts put in
/// front of each: every routed update becomes `p = routed(p, sN(p, ... s1(p, g)))`, so the
/// parts run for every parameter (their global reductions span them all). Also returns the
/// names the parts declare (kept, or under `clip.` for `part clip = clip_by_global_norm`):
/// the policy's own, not prefixed by a routed optimizer's name when merged. A part must be
/// a transformation without `prepare`, globals or inputs (`E0029`). With `build` false
/// (the routed optimizers had errors) the parts are only checked.
pub fn stage_policy(file: &File, build: bool) -> (File, Vec<String>, Vec<Diagnostic>, Vec<CallSite>) {
    let Some(policy) = file.policies.first() else { return (file.clone(), Vec::new(), Vec::new(), Vec::new()) };
    // Each routed optimizer's wrapper, by use (made before the composer, which borrows them).
    let wrappers: Vec<Option<Optimizer>> = file
        .uses
        .iter()
        .map(|u| u.body.as_ref().and_then(|b| routed_program(file, b)).map(|p| stage_wrapper(policy, &p.name)))
        .collect();
    let mut c = Composer::new(file);
    let mut shared = Vec::new();
    for d in &policy.parts {
        let target = d.target.as_ref().unwrap_or(&d.name);
        let Some(src) = c.lookup(target) else { continue };
        let Some(unit) = c.unit(src, None) else { continue };
        let o = &unit.opt;
        let refuse = |what: &str, span: Span| {
            Diagnostic::error("E0029", format!("a policy's part is a transformation, and `{}` {what}", target.name), d.span)
                .label("put in front of every routed optimizer")
                .note(span, what.to_string())
                .hint("a policy's parts transform every gradient before its route (`clip_by_global_norm`): an update `update(p, u) { ... return d }` with hyperparameters and state only")
        };
        let why = if returns(o).is_none() {
            Some(refuse("assigns its parameter", o.name.span))
        } else if let Some(b) = o.prepares.first() {
            Some(refuse("has a `prepare`", b.span))
        } else if let Some(g) = o.globals.first() {
            Some(refuse("keeps globals", g.span))
        } else {
            o.inputs.first().map(|i| refuse("takes inputs", i.span))
        };
        if let Some(diag) = why {
            c.diags.push(diag);
            continue;
        }
        let prefix = if d.target.is_some() { format!("{}.", d.name.name) } else { String::new() };
        shared.extend(public_names(o).into_iter().map(|(n, _)| format!("{prefix}{n}")));
    }
    let mut out = file.clone();
    for ((u, original), wrapper) in out.uses.iter_mut().zip(&file.uses).zip(&wrappers) {
        let (Some(body), Some(wrapper)) = (&original.body, wrapper) else { continue };
        let Some(program) = routed_program(file, body) else { continue };
        if !build || !c.diags.is_empty() {
            continue;
        }
        let Some(base) = c.unit(Source { opt: program, fns: &body.fns }, None) else { continue };
        let Some(mut unit) = c.unit(Source { opt: wrapper, fns: &[] }, Some(&[(program.name.clone(), base)])) else {
            continue;
        };
        unit.opt.name = program.name.clone();
        u.body = Some(File { fns: unit.fns, optimizers: vec![unit.opt], uses: Vec::new(), policies: Vec::new() });
    }
    let diags = std::mem::take(&mut c.diags);
    (out, shared, diags, c.sites)
}

/// `optimizer POLICY(routed) { part s1 ... update(p, g) { p = routed(p, sN(p, ... s1(p, g))) } }`:
/// the policy's parts in front of one routed optimizer, spans at the policy.
fn stage_wrapper(policy: &PolicyDecl, routed: &Ident) -> Optimizer {
    let at = policy.name.span;
    let name = |n: &str, span: Span| Expr { kind: ExprKind::Name(n.to_string()), span };
    let call = |f: &Ident, u: Expr, span: Span| Expr {
        kind: ExprKind::Call(f.clone(), vec![Arg { name: None, value: name("p", span) }, Arg { name: None, value: u }]),
        span,
    };
    let mut u = name("g", at);
    for part in &policy.parts {
        u = call(&part.name, u, part.span);
    }
    let routed = Ident { name: routed.name.clone(), span: at };
    let p = |n: &str| Param { name: Ident { name: n.to_string(), span: at }, ty: None, span: at };
    let assign = Stmt::Assign {
        target: Ident { name: "p".into(), span: at },
        op: AssignOp::Set,
        value: call(&routed, u, at),
        span: at,
    };
    Optimizer {
        updates: vec![UpdateDef {
            param: p("p"),
            grad: p("g"),
            body: Block { stmts: vec![assign], span: at },
            span: at,
            owner: 0,
        }],
        parts: policy.parts.clone(),
        part_params: vec![routed],
        ..Optimizer::new(policy.name.clone(), policy.span)
    }
}

/// A part as the update calls it.
struct Part {
    /// The name it is called by.
    call: Ident,
    unit: Unit,
    /// `adam.` for `part adam = scale_by_adam`; empty when its names are kept.
    prefix: String,
    /// Its hyperparameters bound where it is called.
    bound: HashSet<String>,
}

struct Composer<'a> {
    pool: HashMap<&'a str, Source<'a>>,
    diags: Vec<Diagnostic>,
    /// The optimizers being expanded, innermost last (a part of itself is an error).
    stack: Vec<String>,
    visited: HashSet<String>,
    sites: Vec<CallSite>,
}

impl<'a> Composer<'a> {
    fn new(file: &'a File) -> Composer<'a> {
        let mut c = Composer {
            pool: HashMap::new(),
            diags: Vec::new(),
            stack: Vec::new(),
            visited: HashSet::new(),
            sites: Vec::new(),
        };
        c.collect(file);
        c
    }

    /// Every optimizer of the file and of the files it uses, by name.
    fn collect(&mut self, file: &'a File) {
        for o in &file.optimizers {
            if let Some(first) = self.pool.get(o.name.name.as_str()) {
                self.diags.push(
                    Diagnostic::error("E0029", format!("two optimizers are named `{}`", o.name.name), o.name.span)
                        .label("a second one")
                        .note(first.opt.name.span, "the first one")
                        .hint("parts are found by name among the file's optimizers and those it uses: rename one"),
                );
                continue;
            }
            self.pool.insert(&o.name.name, Source { opt: o, fns: &file.fns });
        }
        for u in &file.uses {
            if let Some(body) = &u.body {
                self.collect(body);
            }
        }
    }

    fn known(&self) -> String {
        let mut names: Vec<&str> = self.pool.keys().copied().collect();
        names.sort_unstable();
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    }

    /// The file's program, which must be an optimizer (not a wrapper, not a transformation).
    fn program(&mut self, opt: &'a Optimizer, fns: &'a [FnDef]) -> Option<Unit> {
        let unit = self.unit(Source { opt, fns }, None)?;
        if let Some(span) = returns(&unit.opt) {
            self.diags.push(
                Diagnostic::error("E0029", format!("`{}` is a transformation, not an optimizer", opt.name.name), opt.name.span)
                    .label("its update returns a direction")
                    .note(span, "the direction it returns")
                    .hint("an optimizer assigns `p` and state instead of returning; a transformation is a part, called from an optimizer's update: `p = p - lr * name(p, g)`"),
            );
            return None;
        }
        Some(unit)
    }

    fn lookup(&mut self, name: &Ident) -> Option<Source<'a>> {
        let found = self.pool.get(name.name.as_str()).copied();
        if found.is_some() {
            self.visited.insert(name.name.clone());
        } else {
            let known = self.known();
            self.diags.push(
                Diagnostic::error("E0002", format!("no optimizer is named `{}`", name.name), name.span)
                    .label("not defined in this file or a file it uses")
                    .hint(format!("the optimizers here are {known}; `use \"file.gd\"` brings in another")),
            );
        }
        found
    }

    /// An optimizer expanded; `given` names the optimizers a wrapper's parameters stand for
    /// (`None` outside an instance).
    fn unit(&mut self, src: Source<'a>, given: Option<&[(Ident, Unit)]>) -> Option<Unit> {
        let name = &src.opt.name;
        self.visited.insert(name.name.clone());
        if self.stack.contains(&name.name) {
            self.diags.push(
                Diagnostic::error("E0029", format!("`{}` is a part of itself", name.name), name.span)
                    .label("used again while it is being composed")
                    .hint(format!("the parts in between: {}", self.stack.join(" -> "))),
            );
            return None;
        }
        self.stack.push(name.name.clone());
        let out = self.unit_inner(src, given);
        self.stack.pop();
        out
    }

    fn unit_inner(&mut self, src: Source<'a>, given: Option<&[(Ident, Unit)]>) -> Option<Unit> {
        let opt = src.opt;
        if let Some(inst) = &opt.instance {
            let wrapper = self.lookup(&inst.wrapper)?;
            if wrapper.opt.part_params.is_empty() {
                self.diags.push(
                    Diagnostic::error("E0029", format!("`{}` is not a wrapper", inst.wrapper.name), inst.wrapper.span)
                        .label("takes no optimizer")
                        .note(wrapper.opt.name.span, "declared without parameters")
                        .hint(format!(
                            "a wrapper names the optimizers it wraps: `optimizer {}(base) {{ ... }}`",
                            inst.wrapper.name
                        )),
                );
                return None;
            }
            if wrapper.opt.part_params.len() != inst.args.len() {
                let n = wrapper.opt.part_params.len();
                self.diags.push(
                    Diagnostic::error(
                        "E0003",
                        format!("`{}` wraps {n} optimizer{}", inst.wrapper.name, if n == 1 { "" } else { "s" }),
                        inst.span,
                    )
                    .label(format!("given {}", inst.args.len()))
                    .note(wrapper.opt.name.span, "the wrapper")
                    .hint("give one optimizer for each of the wrapper's parameters"),
                );
                return None;
            }
            let mut args = Vec::new();
            for (param, arg) in wrapper.opt.part_params.iter().zip(&inst.args) {
                let inner = self.lookup(arg)?;
                let unit = self.unit(inner, None)?;
                if let Some(span) = returns(&unit.opt) {
                    self.diags.push(
                        Diagnostic::error("E0029", format!("`{}` wraps an optimizer, and `{}` is a transformation", inst.wrapper.name, arg.name), arg.span)
                            .label("has no parameter to step: its update returns a direction")
                            .note(span, "the direction it returns")
                            .hint("wrap an optimizer whose update assigns its parameter, such as `adam`; chain transformations inside an optimizer's update"),
                    );
                    return None;
                }
                args.push((param.clone(), unit));
            }
            let mut unit = self.unit(wrapper, Some(&args))?;
            unit.opt.name = opt.name.clone();
            return Some(unit);
        }
        if !opt.part_params.is_empty() && given.is_none() {
            let params = opt.part_params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
            self.diags.push(
                Diagnostic::error(
                    "E0029",
                    format!("`{}` is a wrapper: it needs an optimizer to wrap", opt.name.name),
                    opt.name.span,
                )
                .label(format!("wraps `{params}`"))
                .hint(format!("instantiate it: `optimizer adam_{0} = {0}(adam)`", opt.name.name)),
            );
            return None;
        }
        let mut parts = Vec::new();
        let mut failed = false;
        for (param, unit) in given.unwrap_or(&[]) {
            parts.push(Part { call: param.clone(), unit: unit.clone(), prefix: String::new(), bound: HashSet::new() });
        }
        for d in &opt.parts {
            let target = d.target.as_ref().unwrap_or(&d.name);
            if let Some(first) = parts.iter().find(|p| p.call.name == d.name.name) {
                self.diags.push(
                    Diagnostic::error("E0029", format!("two parts are called `{}`", d.name.name), d.name.span)
                        .label("a second part of this name")
                        .note(first.call.span, "the first")
                        .hint(format!(
                            "name it: `part {0}2 = {1}` puts its names under `{0}2.`",
                            d.name.name, target.name
                        )),
                );
                failed = true;
                continue;
            }
            // A part that cannot be had is reported and left out; the others are still
            // inlined, so that their misuses are reported in the same run.
            let Some(src) = self.lookup(target) else {
                failed = true;
                continue;
            };
            let Some(unit) = self.unit(src, None) else {
                failed = true;
                continue;
            };
            let prefix = if d.target.is_some() { format!("{}.", d.name.name) } else { String::new() };
            parts.push(Part { call: d.name.clone(), unit, prefix, bound: HashSet::new() });
        }
        let mut out = opt.clone();
        out.parts.clear();
        out.part_params.clear();
        let mut fns: Vec<FnDef> = src.fns.to_vec();
        if parts.is_empty() {
            return Some(Unit { opt: out, fns });
        }
        let errors = self.diags.len();
        self.bind(&mut parts, &out);
        self.declare(&mut out, &mut fns, &parts);
        let called = self.inline_updates(&mut out, &parts);
        for part in &parts {
            if !called.contains(&part.call.name) {
                self.diags.push(
                    Diagnostic::error("E0029", format!("part `{}` is never called", part.call.name), part.call.span)
                        .label("declared here")
                        .hint(format!("call it from the update, `p = {0}(p, g)`, or remove it", part.call.name)),
                );
            }
        }
        (self.diags.len() == errors && !failed).then_some(Unit { opt: out, fns })
    }

    /// Which hyperparameters each part's calls bind: the same at every call, each a
    /// hyperparameter of the part that only its update reads.
    fn bind(&mut self, parts: &mut [Part], out: &Optimizer) {
        for part in parts.iter_mut() {
            let mut sites: Vec<(Span, Vec<Ident>)> = Vec::new();
            for u in &out.updates {
                visit_exprs(&u.body, &mut |e| {
                    if let ExprKind::Call(f, args) = &e.kind {
                        if f.name == part.call.name {
                            sites.push((e.span, args.iter().filter_map(|a| a.name.clone()).collect()));
                        }
                    }
                });
            }
            let hypers = &part.unit.opt.hypers;
            for (_, named) in &sites {
                for n in named {
                    if !hypers.iter().any(|h| h.name.name == n.name) {
                        let list = hypers.iter().map(|h| format!("`{}`", h.name.name)).collect::<Vec<_>>().join(", ");
                        self.diags.push(
                            Diagnostic::error(
                                "E0018",
                                format!("`{}` has no hyperparameter `{}`", part.call.name, n.name),
                                n.span,
                            )
                            .label("not one of its hyperparameters")
                            .hint(if list.is_empty() {
                                format!("`{}` has no hyperparameters to bind", part.call.name)
                            } else {
                                format!("its hyperparameters are {list}")
                            }),
                        );
                    }
                }
            }
            let set = |named: &Vec<Ident>| named.iter().map(|n| n.name.clone()).collect::<HashSet<String>>();
            if let Some((first_span, first)) = sites.first() {
                let first_set = set(first);
                for (span, named) in &sites[1..] {
                    if set(named) != first_set {
                        self.diags.push(
                            Diagnostic::error(
                                "E0029",
                                format!("the calls of `{}` bind different hyperparameters", part.call.name),
                                *span,
                            )
                            .label("binds a different set")
                            .note(*first_span, "the first call")
                            .hint("a hyperparameter is bound at every call of a part or at none"),
                        );
                    }
                }
                part.bound = first_set;
            }
            // A bound hyperparameter exists only where the update reads it.
            let opt = &part.unit.opt;
            for name in &part.bound {
                let elsewhere = opt.states.iter().filter_map(|s| s.init.as_ref()).any(|e| mentions(e, name))
                    || opt.globals.iter().any(|g| mentions(&g.init, name))
                    || opt.prepares.iter().any(|b| {
                        let mut found = false;
                        visit_exprs(b, &mut |e| found |= matches!(&e.kind, ExprKind::Name(n) if n == name));
                        found
                    });
                if elsewhere {
                    let span = sites.first().map_or(part.call.span, |s| s.0);
                    self.diags.push(
                        Diagnostic::error(
                            "E0029",
                            format!("`{name}` of `{}` cannot be bound at a call", part.call.name),
                            span,
                        )
                        .label("bound here")
                        .note(
                            opt.name.span,
                            format!(
                                "`{}` reads `{name}` outside its update (in `prepare`, a state or a global)",
                                opt.name.name
                            ),
                        )
                        .hint("set it as a hyperparameter instead of binding it"),
                    );
                }
            }
        }
    }

    /// The parts' hyperparameters, state, globals, inputs, `prepare` statements and
    /// functions, renamed, before the optimizer's own; a name declared twice is an error.
    fn declare(&mut self, out: &mut Optimizer, fns: &mut Vec<FnDef>, parts: &[Part]) {
        let mut seen: HashMap<String, (Span, String)> = HashMap::new();
        let own = format!("`{}` itself", out.name.name);
        for (n, span) in public_names(out) {
            seen.insert(n, (span, own.clone()));
        }
        let (mut hypers, mut states, mut globals, mut inputs, mut prepare) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for part in parts {
            let opt = &part.unit.opt;
            let r = public_renamer(part);
            let whose = format!("part `{}`", part.call.name);
            for (n, span) in public_names(opt) {
                if part.bound.contains(&n) {
                    continue;
                }
                let new = format!("{}{n}", part.prefix);
                if let Some((first, by)) = seen.get(&new) {
                    self.diags.push(
                        Diagnostic::error(
                            "E0029",
                            format!("`{new}` is declared by {whose} and by {by}"),
                            part.call.span,
                        )
                        .label(format!("brings a second `{new}`"))
                        .note(*first, "the first")
                        .note(span, format!("the one {whose} declares"))
                        .hint(format!(
                            "name the part, `part {0} = {1}`, to put its names under `{0}.`",
                            part.call.name, opt.name.name
                        )),
                    );
                    continue;
                }
                seen.insert(new, (span, whose.clone()));
            }
            for h in opt.hypers.iter().filter(|h| !part.bound.contains(&h.name.name)) {
                let mut h = h.clone();
                r.name(&mut h.name.name);
                hypers.push(h);
            }
            for s in &opt.states {
                let mut s = s.clone();
                r.name(&mut s.name.name);
                if let Some(e) = &mut s.init {
                    r.expr(e);
                }
                states.push(s);
            }
            for g in &opt.globals {
                let mut g = g.clone();
                r.name(&mut g.name.name);
                r.expr(&mut g.init);
                globals.push(g);
            }
            for i in &opt.inputs {
                let mut i = i.clone();
                r.name(&mut i.name.name);
                inputs.push(i);
            }
            for b in &opt.prepares {
                let mut b = b.clone();
                r.block(&mut b);
                prepare.extend(b.stmts);
            }
            let fn_only = Renamer { fns: r.fns.clone(), ..Renamer::default() };
            for f in &part.unit.fns {
                let mut f = f.clone();
                f.name.name = format!("{}.{}", part.call.name, f.name.name);
                fn_only.block(&mut f.body);
                fns.push(f);
            }
        }
        hypers.append(&mut out.hypers);
        states.append(&mut out.states);
        globals.append(&mut out.globals);
        inputs.append(&mut out.inputs);
        (out.hypers, out.states, out.globals, out.inputs) = (hypers, states, globals, inputs);
        if !prepare.is_empty() {
            match out.prepares.first_mut() {
                Some(first) => {
                    prepare.append(&mut first.stmts);
                    first.stmts = prepare;
                }
                None => out.prepares.push(Block { stmts: prepare, span: parts[0].call.span }),
            }
        }
    }

    /// Every update with its part calls inlined; an update calling a part that has several
    /// updates (a matrix one and a vector one) becomes one update per variant. Returns the
    /// parts called.
    fn inline_updates(&mut self, out: &mut Optimizer, parts: &[Part]) -> HashSet<String> {
        let mut called = HashSet::new();
        let mut updates = Vec::new();
        for u in std::mem::take(&mut out.updates) {
            let multi: Vec<&Part> =
                parts.iter().filter(|p| p.unit.opt.updates.len() > 1 && calls(&u.body, &p.call.name)).collect();
            if multi.len() > 1 {
                self.diags.push(
                    Diagnostic::error("E0029", format!("`{}` and `{}` both have several updates", multi[0].call.name, multi[1].call.name), u.span)
                        .label("an update that calls both")
                        .hint("an update may call one part with several update variants (a matrix and a vector one); give the others one update"),
                );
                continue;
            }
            let variants: Vec<Option<(String, usize)>> = match multi.first() {
                Some(p) => (0..p.unit.opt.updates.len()).map(|i| Some((p.call.name.clone(), i))).collect(),
                None => vec![None],
            };
            for variant in variants {
                let mut u = u.clone();
                let mut site = Site { parts, variant, seen: HashMap::new(), types: Vec::new() };
                self.inline_block(&mut u.body, &mut site, false);
                if u.param.ty.is_none() {
                    u.param.ty = site.types.iter().find_map(|t| t.0.clone());
                }
                if u.grad.ty.is_none() {
                    u.grad.ty = site.types.iter().find_map(|t| t.1.clone());
                }
                called.extend(site.seen.into_keys());
                updates.push(u);
            }
        }
        out.updates = updates;
        called
    }

    fn inline_block(&mut self, b: &mut Block, site: &mut Site, in_loop: bool) {
        for mut s in std::mem::take(&mut b.stmts) {
            let mut pre = Vec::new();
            match &mut s {
                Stmt::Let { value, .. }
                | Stmt::Var { value, .. }
                | Stmt::Assign { value, .. }
                | Stmt::Return { value, .. } => self.inline_expr(value, &mut pre, site, in_loop),
                Stmt::If { cond, then, otherwise, .. } => {
                    self.inline_expr(cond, &mut pre, site, in_loop);
                    self.inline_block(then, site, in_loop);
                    if let Some(o) = otherwise {
                        self.inline_block(o, site, in_loop);
                    }
                }
                Stmt::For { start, end, body, .. } => {
                    self.inline_expr(start, &mut pre, site, in_loop);
                    self.inline_expr(end, &mut pre, site, in_loop);
                    self.inline_block(body, site, true);
                }
                Stmt::Every { period, phase, body, .. } => {
                    self.inline_expr(period, &mut pre, site, in_loop);
                    if let Some(p) = phase {
                        self.inline_expr(p, &mut pre, site, in_loop);
                    }
                    self.inline_block(body, site, in_loop);
                }
                Stmt::With { value, body, .. } => {
                    self.inline_expr(value, &mut pre, site, in_loop);
                    self.inline_block(body, site, in_loop);
                }
            }
            b.stmts.append(&mut pre);
            b.stmts.push(s);
        }
    }

    fn inline_expr(&mut self, e: &mut Expr, pre: &mut Vec<Stmt>, site: &mut Site, in_loop: bool) {
        match &mut e.kind {
            ExprKind::Number(_) | ExprKind::Bool(_) | ExprKind::Name(_) => {}
            ExprKind::Unary(_, a) | ExprKind::Transpose(a) => self.inline_expr(a, pre, site, in_loop),
            ExprKind::Binary(_, a, b) => {
                self.inline_expr(a, pre, site, in_loop);
                self.inline_expr(b, pre, site, in_loop);
            }
            ExprKind::Tuple(items) => {
                for x in items {
                    self.inline_expr(x, pre, site, in_loop);
                }
            }
            ExprKind::Call(f, args) => {
                for a in args.iter_mut() {
                    self.inline_expr(&mut a.value, pre, site, in_loop);
                }
                let parts = site.parts;
                if let Some(part) = parts.iter().find(|p| p.call.name == f.name) {
                    let (f, args) = (f.clone(), args.clone());
                    if let Some(result) = self.inline_call(part, &f, &args, e.span, pre, site, in_loop) {
                        e.kind = ExprKind::Name(result);
                    }
                }
            }
        }
    }

    /// The statements of one call of a part, appended to `pre`; the name of its value.
    #[allow(clippy::too_many_arguments)]
    fn inline_call(
        &mut self,
        part: &Part,
        f: &Ident,
        args: &[Arg],
        span: Span,
        pre: &mut Vec<Stmt>,
        site: &mut Site,
        in_loop: bool,
    ) -> Option<String> {
        let name = &part.call.name;
        if in_loop {
            self.diags.push(
                Diagnostic::error("E0029", format!("`{name}` is called inside `for`"), span)
                    .label("would step the part once per iteration")
                    .hint("a part steps its state once per step: call it outside the loop"),
            );
            return None;
        }
        if let Some(first) = site.seen.get(name) {
            self.diags.push(
                Diagnostic::error("E0029", format!("`{name}` is called twice in one update"), span)
                    .label("a second call")
                    .note(*first, "the first call")
                    .hint(format!("a part steps its state once per step; for a second copy with state of its own, `part {name}2 = {}`", part.unit.opt.name.name)),
            );
            return None;
        }
        site.seen.insert(name.clone(), span);
        let positional: Vec<&Expr> = args.iter().filter(|a| a.name.is_none()).map(|a| &a.value).collect();
        if positional.len() != 2 {
            self.diags.push(
                Diagnostic::error(
                    "E0003",
                    format!("`{name}` takes a parameter and a direction, given {}", positional.len()),
                    f.span,
                )
                .label("call of a part")
                .hint(format!(
                    "call it as `{name}(p, g)`, hyperparameters bound by name after them: `{name}(p, g, lr = lr_t)`"
                )),
            );
            return None;
        }
        let opt = &part.unit.opt;
        let index = match &site.variant {
            Some((v, i)) if v == name => *i,
            _ => 0,
        };
        let Some(update) = opt.updates.get(index) else {
            self.diags.push(
                Diagnostic::error("E0017", format!("`{}` has no update", opt.name.name), span)
                    .label("called here")
                    .note(opt.name.span, "declared without `update(p, g) { ... }`")
                    .hint("a part is an optimizer or transformation with an update"),
            );
            return None;
        };
        site.types.push((update.param.ty.clone(), update.grad.ty.clone()));
        let mut r = public_renamer(part);
        let local = |n: &str| format!("{name}.{n}");
        let (p, g) = (&update.param.name.name, &update.grad.name.name);
        r.names.insert(p.clone(), local(p));
        r.names.insert(g.clone(), local(g));
        let mut names = Vec::new();
        locals(&update.body, &mut names);
        for n in names {
            r.names.insert(n.clone(), local(&n));
        }
        for a in args {
            if let Some(n) = &a.name {
                r.bound.insert(n.name.clone(), a.value.clone());
            }
        }
        self.sites.push(CallSite { body: update.body.span, call: span, part: name.clone() });
        let mut body = update.body.clone();
        r.block(&mut body);
        let ret = match body.stmts.last() {
            Some(Stmt::Return { .. }) => body.stmts.pop(),
            _ => None,
        };
        let ident = |n: String| Ident { name: n, span };
        let bind = |n: &String, value: &Expr| {
            if assigns(&update.body, n) {
                Stmt::Var { name: ident(local(n)), value: value.clone(), span }
            } else {
                Stmt::Let { names: vec![ident(local(n))], value: value.clone(), span }
            }
        };
        pre.push(bind(p, positional[0]));
        pre.push(bind(g, positional[1]));
        pre.extend(body.stmts);
        match ret {
            Some(Stmt::Return { value, .. }) => {
                pre.push(Stmt::Let { names: vec![ident(local("out"))], value, span });
                Some(local("out"))
            }
            _ => Some(local(p)),
        }
    }
}

/// Where a part is inlined: the parts, which variant of a part with several updates this
/// copy of the update calls, the calls made so far, and the called variants' types.
struct Site<'p> {
    parts: &'p [Part],
    variant: Option<(String, usize)>,
    seen: HashMap<String, Span>,
    types: Vec<(Option<TypeExpr>, Option<TypeExpr>)>,
}

/// Renames a part's declared names (prefixed, or kept) and its functions.
fn public_renamer(part: &Part) -> Renamer {
    let names: Vec<String> = public_names(&part.unit.opt).into_iter().map(|(n, _)| n).collect();
    let fns: Vec<String> = part.unit.fns.iter().map(|f| f.name.name.clone()).collect();
    let mut r = Renamer::prefixing(&part.prefix, &names, None);
    r.fns = fns.into_iter().map(|f| (f.clone(), format!("{}.{f}", part.call.name))).collect();
    r
}

/// Whether an expression reads `name`.
fn mentions(e: &Expr, name: &str) -> bool {
    let mut found = false;
    visit_expr(e, &mut |x| found |= matches!(&x.kind, ExprKind::Name(n) if n == name));
    found
}

/// Where an optimizer's update returns (a transformation), if it does.
fn returns(opt: &Optimizer) -> Option<Span> {
    opt.updates.iter().find_map(|u| match u.body.stmts.last() {
        Some(Stmt::Return { span, .. }) => Some(*span),
        _ => None,
    })
}

/// Whether a block calls `name` anywhere.
fn calls(b: &Block, name: &str) -> bool {
    let mut found = false;
    visit_exprs(b, &mut |e| {
        if let ExprKind::Call(f, _) = &e.kind {
            found |= f.name == name;
        }
    });
    found
}

/// The names a block binds: `let`, `var` and loop variables, nested blocks included.
fn locals(b: &Block, out: &mut Vec<String>) {
    for s in &b.stmts {
        match s {
            Stmt::Let { names, .. } => out.extend(names.iter().map(|n| n.name.clone())),
            Stmt::Var { name, .. } => out.push(name.name.clone()),
            Stmt::For { var, body, .. } => {
                out.push(var.name.clone());
                locals(body, out);
            }
            Stmt::If { then, otherwise, .. } => {
                locals(then, out);
                if let Some(o) = otherwise {
                    locals(o, out);
                }
            }
            Stmt::Every { body, .. } | Stmt::With { body, .. } => locals(body, out),
            Stmt::Assign { .. } | Stmt::Return { .. } => {}
        }
    }
}

/// Whether a block assigns `name`.
fn assigns(b: &Block, name: &str) -> bool {
    b.stmts.iter().any(|s| match s {
        Stmt::Assign { target, .. } => target.name == name,
        Stmt::If { then, otherwise, .. } => assigns(then, name) || otherwise.as_ref().is_some_and(|o| assigns(o, name)),
        Stmt::For { body, .. } | Stmt::Every { body, .. } | Stmt::With { body, .. } => assigns(body, name),
        _ => false,
    })
}

/// The names a part declares for the whole optimizer (not its update's locals).
fn public_names(opt: &Optimizer) -> Vec<(String, Span)> {
    let mut names: Vec<(String, Span)> = Vec::new();
    names.extend(opt.hypers.iter().map(|h| (h.name.name.clone(), h.name.span)));
    names.extend(opt.states.iter().map(|s| (s.name.name.clone(), s.name.span)));
    names.extend(opt.globals.iter().map(|g| (g.name.name.clone(), g.name.span)));
    names.extend(opt.inputs.iter().map(|i| (i.name.name.clone(), i.name.span)));
    for b in &opt.prepares {
        for s in &b.stmts {
            match s {
                Stmt::Let { names: ns, .. } => names.extend(ns.iter().map(|n| (n.name.clone(), n.span))),
                Stmt::Var { name, .. } => names.push((name.name.clone(), name.span)),
                _ => {}
            }
        }
    }
    names
}
