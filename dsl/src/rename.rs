//! Renaming inside an optimizer's statements: names that become other names (a policy's
//! `muon.buf`, a part's `adam.m`), names that become expressions (a part's hyperparameter
//! bound where it is called) and functions that become other functions. Nothing can shadow
//! a name (`let` never shadows), so every occurrence of a listed name is the one renamed.

use crate::ast::*;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct Renamer {
    /// Names and what they become.
    pub names: HashMap<String, String>,
    /// Names read as an expression instead (never assigned: hyperparameters).
    pub bound: HashMap<String, Expr>,
    /// Functions and what they become.
    pub fns: HashMap<String, String>,
}

impl Renamer {
    /// Every name in `names` prefixed with `prefix`, and every function in `fns`.
    pub fn prefixing<'a>(
        prefix: &str,
        names: impl IntoIterator<Item = &'a String>,
        fns: impl IntoIterator<Item = &'a String>,
    ) -> Renamer {
        Renamer {
            names: names.into_iter().map(|n| (n.clone(), format!("{prefix}{n}"))).collect(),
            bound: HashMap::new(),
            fns: fns.into_iter().map(|n| (n.clone(), format!("{prefix}{n}"))).collect(),
        }
    }

    pub fn name(&self, n: &mut String) {
        if let Some(new) = self.names.get(n.as_str()) {
            n.clone_from(new);
        }
    }

    pub fn block(&self, b: &mut Block) {
        for s in &mut b.stmts {
            self.stmt(s);
        }
    }

    pub fn stmt(&self, s: &mut Stmt) {
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
            Stmt::For { var, start, end, body, .. } => {
                self.name(&mut var.name);
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

    pub fn expr(&self, e: &mut Expr) {
        match &mut e.kind {
            ExprKind::Number(_) | ExprKind::Bool(_) => {}
            ExprKind::Name(n) => {
                if let Some(value) = self.bound.get(n.as_str()) {
                    *e = value.clone();
                } else {
                    self.name(n);
                }
            }
            ExprKind::Unary(_, a) | ExprKind::Transpose(a) => self.expr(a),
            ExprKind::Binary(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
            ExprKind::Call(f, args) => {
                if let Some(new) = self.fns.get(&f.name) {
                    f.name.clone_from(new);
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
