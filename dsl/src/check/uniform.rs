//! Which values are the same for every parameter of a step. A global assigned in `update`
//! (Prodigy's `d`) is stored once per step, after every parameter has run, so its value and
//! the conditions it is assigned under may read only hyperparameters, globals, `step`,
//! `prepare`'s values and reductions over every parameter (`global_sum(...)`): never the
//! parameter, its gradient, state, inputs, its shape, or a local computed from them.

use super::{Checker, Ctx, Entity};
use crate::ast::{Expr, ExprKind};
use crate::builtins::{self, Kind};
use crate::diagnostic::Diagnostic;
use crate::span::Span;

impl Checker<'_> {
    /// The first name in `e` whose value may differ between parameters, with its span.
    pub(crate) fn per_param_name(&self, e: &Expr) -> Option<(String, Span)> {
        match &e.kind {
            ExprKind::Number(_) | ExprKind::Bool(_) => None,
            ExprKind::Name(n) => {
                let entry = self.scopes.iter().rev().find_map(|s| s.get(n))?;
                let varies = match entry.entity {
                    Entity::Param
                    | Entity::Grad
                    | Entity::State { .. }
                    | Entity::Input { .. }
                    | Entity::InputDim
                    | Entity::ShapeScalar => true,
                    Entity::Let | Entity::Var => self.per_param.contains(n),
                    _ => false,
                };
                varies.then(|| (n.clone(), e.span))
            }
            // A reduction over every parameter is one value for all of them.
            ExprKind::Call(f, _) if builtins::is(&f.name, Kind::Global) => None,
            // The parameter's role.
            ExprKind::Call(f, _) if builtins::is(&f.name, Kind::HasRole) => Some((f.name.clone(), e.span)),
            ExprKind::Call(_, args) => args.iter().find_map(|a| self.per_param_name(&a.value)),
            ExprKind::Unary(_, a) | ExprKind::Transpose(a) => self.per_param_name(a),
            ExprKind::Binary(_, a, b) => self.per_param_name(a).or_else(|| self.per_param_name(b)),
            ExprKind::Tuple(items) => items.iter().find_map(|x| self.per_param_name(x)),
        }
    }

    /// Notes that the local `name` (a `let` or `var` of an update) was given `value` here:
    /// it differs between parameters when the value does or a condition around it does.
    pub(crate) fn note_local_value(&mut self, name: &str, value: &Expr) {
        if !matches!(self.ctx, Ctx::Update { .. }) {
            return;
        }
        if (self.per_param_name(value).is_some() || !self.per_param_conds.is_empty())
            && !self.per_param.iter().any(|n| n == name)
        {
            self.per_param.push(name.to_string());
        }
    }

    /// Checks that a global assigned in `update` is given the same value for every parameter.
    pub(crate) fn check_global_in_update(&mut self, name: &str, span: Span, value: &Expr) {
        if self.assigns_global_in_update.is_none() {
            self.assigns_global_in_update = Some(span);
        }
        let hint = "a global is one value for the whole optimizer, stored once per step: compute it from \
                    hyperparameters, globals, `step` and reductions over every parameter (`global_sum(...)`, \
                    `global_max_abs(...)`); keep a per-parameter value in a `state`";
        if let Some((n, at)) = self.per_param_name(value) {
            let d = Diagnostic::error("E0030", format!("global `{name}` would differ between parameters"), value.span)
                .label("this value depends on the parameter being updated")
                .note(at, format!("`{n}` differs between parameters"))
                .hint(hint);
            self.error(d);
        } else if let Some(cond) = self.per_param_conds.first().copied() {
            let d = Diagnostic::error(
                "E0030",
                format!("global `{name}` is assigned under a condition that differs between parameters"),
                span,
            )
            .label("assigned here")
            .note(cond, "this condition depends on the parameter being updated")
            .hint(hint);
            self.error(d);
        }
    }
}
