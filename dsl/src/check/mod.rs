//! The checker: resolves names, infers the type and shape of every expression, and reports
//! every error of a file in one run (a failed sub-expression has the type `None`, which
//! silences follow-on errors). It changes nothing: the lowering trusts a checked AST.
//!
//! Scopes, innermost first: `let`/`var`/loop variables, then `p`, `g`, state, the shape
//! scalars and the `prepare` block's `let`s (inside `update`), then hyperparameters, globals
//! and `step`. Functions see only their parameters and other functions.

mod expr;
mod items;
mod stmt;
mod uniform;

use crate::ast::File;
use crate::diagnostic::Diagnostic;
use crate::span::Span;
use crate::types::Ty;
use std::collections::HashMap;

/// The result of checking: the diagnostics, errors and warnings.
pub type Checked = Vec<Diagnostic>;

/// Checks a parsed file, returning every diagnostic found.
pub fn check(file: &File) -> Checked {
    let mut c = Checker::new(file);
    c.check_file();
    c.diags
}

/// Checks a routed optimizer with a policy's parts in front of its update
/// (`compose::stage_policy`). Its global reductions are the parts' (the optimizer's own were
/// refused when it was checked alone), the same in each of its updates: the engines fold
/// them over every parameter of every update, so several updates may hold them.
pub fn check_staged(file: &File) -> Checked {
    let mut c = Checker::new(file);
    c.reductions_span_updates = true;
    c.check_file();
    c.diags
}

/// `step` and the shape scalars: names no declaration may take.
pub(crate) fn is_builtin_name(name: &str) -> bool {
    name == "step" || crate::builtins::SHAPE_SCALARS.contains(&name)
}

/// What a name refers to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entity {
    Hyper {
        int: bool,
        /// `optional hyper`: read only under `if present(name)`.
        optional: bool,
    },
    /// A hyperparameter whose value is a precision (`hyper ns_precision = bf16`): read only
    /// by `with precision = ...`.
    PrecisionHyper,
    Global,
    Step,
    PrepareLet,
    State {
        initialised: bool,
    },
    Param,
    Grad,
    /// A per-parameter input handed over with the step (`input a: [batch, cols]`).
    Input {
        optional: bool,
    },
    /// A dimension of an input's own (`batch`): its size on this step, a scalar.
    InputDim,
    ShapeScalar,
    Let,
    Var,
    LoopVar,
    /// A function parameter; `int` ones may bound loops (then every call passes a static value).
    FnParam {
        int: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub entity: Entity,
    pub ty: Option<Ty>,
    pub span: Span,
    pub used: bool,
}

/// Where the code being checked runs; decides which names and statements are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// A hyperparameter default or range, or a global's initial value: literals only.
    Constant,
    /// A state initialiser: hypers, shape scalars, `p`, `zeros`, `eye`.
    Init,
    Prepare,
    Update {
        /// The update's named dimensions: 0 (`update(p, g)`), 1 (`[rows]`), 2 (`[rows, cols]`).
        dims: usize,
    },
    Fn,
}

/// Whether an update with `dims` named dimensions has the dimension `name`.
pub(crate) fn has_dim(dims: usize, name: &str) -> bool {
    match name {
        "rows" => dims >= 1,
        "cols" => dims >= 2,
        // Per-axis state exists for a parameter of any rank.
        crate::builtins::AXES => true,
        _ => false,
    }
}

/// Whether every dimension of `shape` exists in an update with `dims` named dimensions
/// (an input's own dimensions, `extra`, always do).
pub(crate) fn shape_available(dims: usize, shape: &crate::types::Shape, extra: &[String]) -> bool {
    match shape {
        crate::types::Shape::Dims(d) => d.iter().all(|x| has_dim(dims, x) || extra.contains(x)),
        _ => true,
    }
}

pub(crate) struct Checker<'a> {
    pub file: &'a File,
    pub diags: Vec<Diagnostic>,
    /// Scopes, innermost last.
    pub scopes: Vec<HashMap<String, Entry>>,
    pub ctx: Ctx,
    /// Uninitialised state definitely assigned on every path so far, in the current update.
    pub assigned: Vec<String>,
    /// Uninitialised state already reported as read too early (reported once each).
    pub reported_uninit: Vec<String>,
    /// State names referenced anywhere (for the unused-state warning).
    pub used_state: Vec<String>,
    /// The function whose body is being checked, and the functions it calls.
    pub current_fn: Option<String>,
    pub calls: HashMap<String, Vec<(String, Span)>>,
    /// The state shapes of the optimizer being checked, for `eye`/`p` initialisers.
    pub init_shape: Option<crate::types::Shape>,
    /// Return types of functions already checked (`None`: the body had errors).
    pub fn_returns: HashMap<String, Option<Ty>>,
    /// Functions whose bodies are being checked, outermost first: a call to one of them
    /// is recursion.
    pub in_progress: Vec<String>,
    /// Per function, the indices of its `int` parameters that bound a `for` loop.
    pub loop_bound_params: HashMap<String, Vec<usize>>,
    /// Where a global reduction (`global_norm`, ...) was used, if anywhere.
    pub uses_global_reduction: Option<Span>,
    /// Where an update first assigns a global (a value stored once per step), if anywhere.
    pub assigns_global_in_update: Option<Span>,
    /// Whether global reductions are a policy's parts', the same in every update
    /// ([`check_staged`]): then several updates may hold them.
    pub reductions_span_updates: bool,
    /// The current update's locals whose value may differ between parameters (`uniform.rs`).
    pub per_param: Vec<String>,
    /// The conditions of the enclosing `if`s that differ between parameters, outermost first.
    pub per_param_conds: Vec<Span>,
    /// Per function, the pairs of its dimension names that an elementwise operation
    /// broadcasts against each other (`[c] - [r, c]`, `[r] * [c]`), with where: a call that
    /// binds both names to one dimension makes that operation ambiguous (`[n] - [n, n]`:
    /// which axis repeats?), so the call is refused.
    pub fn_broadcasts: HashMap<String, Vec<(String, String, Span)>>,
    /// The optimizer's input dimensions (`batch`): names of inputs' dimensions other than
    /// `rows` and `cols`.
    pub input_dims: Vec<String>,
    /// Optional inputs known present where the code being checked runs (`if present(h)`).
    pub present: Vec<String>,
    /// Whether the name being checked is a direct operand of `@` (`a.T @ a`), the only place
    /// a value with an input dimension may appear.
    pub contracting: bool,
}

impl<'a> Checker<'a> {
    fn new(file: &'a File) -> Self {
        Checker {
            file,
            diags: Vec::new(),
            scopes: vec![HashMap::new()],
            ctx: Ctx::Constant,
            assigned: Vec::new(),
            reported_uninit: Vec::new(),
            used_state: Vec::new(),
            current_fn: None,
            calls: HashMap::new(),
            init_shape: None,
            fn_returns: HashMap::new(),
            in_progress: Vec::new(),
            loop_bound_params: HashMap::new(),
            uses_global_reduction: None,
            assigns_global_in_update: None,
            reductions_span_updates: false,
            per_param: Vec::new(),
            per_param_conds: Vec::new(),
            fn_broadcasts: HashMap::new(),
            input_dims: Vec::new(),
            present: Vec::new(),
            contracting: false,
        }
    }

    pub fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub fn lookup(&mut self, name: &str) -> Option<Entry> {
        for scope in self.scopes.iter_mut().rev() {
            if let Some(e) = scope.get_mut(name) {
                e.used = true;
                return Some(e.clone());
            }
        }
        None
    }

    /// Declares a name in the innermost scope; a second declaration in any enclosing scope
    /// of the same function is a duplicate, and the built-in names are reserved. `_` binds
    /// nothing (`for _ in 0..5`).
    pub fn declare(&mut self, name: &str, span: Span, entity: Entity, ty: Option<Ty>) {
        if name == "_" {
            return;
        }
        if is_builtin_name(name) {
            self.error(
                Diagnostic::error("E0012", format!("`{name}` is a built-in name"), span)
                    .label("cannot be declared")
                    .hint(format!("give it another name; `{name}` always means the built-in")),
            );
            return;
        }
        let previous = self.scopes.iter().rev().find_map(|s| s.get(name)).map(|e| e.span);
        if let Some(prev) = previous {
            self.error(
                Diagnostic::error("E0012", format!("`{name}` is already defined"), span)
                    .label("defined again here")
                    .note(prev, "first defined here")
                    .hint(if matches!(entity, Entity::Let | Entity::Var) {
                        "names cannot be shadowed: give it another name, or declare a `var` once and assign it"
                    } else {
                        "give it another name"
                    }),
            );
            return;
        }
        let entry = Entry { entity, ty, span, used: false };
        self.scopes.last_mut().expect("a scope").insert(name.to_string(), entry);
    }

    /// Declares a built-in (`step`, `p` in an initialiser, the shape scalars) or a name already
    /// checked elsewhere (a `prepare` binding), without reporting anything.
    pub fn declare_quietly(&mut self, name: &str, span: Span, entity: Entity, ty: Option<Ty>) {
        let entry = Entry { entity, ty, span, used: false };
        self.scopes.last_mut().expect("a scope").insert(name.to_string(), entry);
    }

    pub fn push(&mut self) {
        self.scopes.push(HashMap::new());
    }

    pub fn pop(&mut self) {
        self.scopes.pop();
    }

    fn check_file(&mut self) {
        let file = self.file;
        if file.optimizers.is_empty() {
            let span = Span::new(0, 0);
            self.error(
                Diagnostic::error("E0017", "the file defines no optimizer", span)
                    .label("expected `optimizer NAME { ... }`")
                    .hint("a .gd file holds one `optimizer` block and any number of `fn`s"),
            );
        }
        for extra in file.optimizers.iter().skip(1) {
            self.error(
                Diagnostic::error("E0017", "a file holds one optimizer", extra.name.span)
                    .label("a second optimizer")
                    .note(file.optimizers[0].name.span, "the first optimizer")
                    .hint("put each optimizer in its own .gd file"),
            );
        }
        self.check_ellipses();
        self.check_fns();
        if let Some(opt) = file.optimizers.first() {
            self.check_optimizer(opt);
            if let (Some(span), true) =
                (self.uses_global_reduction, opt.updates.len() > 1 && !self.reductions_span_updates)
            {
                self.error(
                    Diagnostic::error("E0025", "a global reduction needs an optimizer with one update", span)
                        .label("reduces over every parameter")
                        .note(opt.updates[1].span, "a second update")
                        .hint("parameters of different updates are stepped apart, so a global reduction could not see them all: write one `update(p, g)`"),
                );
            }
            if let (Some(span), true) = (self.assigns_global_in_update, opt.updates.len() > 1) {
                self.error(
                    Diagnostic::error("E0025", "a global assigned in `update` needs an optimizer with one update", span)
                        .label("stored once per step")
                        .note(opt.updates[1].span, "a second update")
                        .hint("parameters of different updates are stepped apart, so each update would store its own value: write one `update(p, g)`, or assign the global in `prepare`"),
                );
            }
        }
    }
}
