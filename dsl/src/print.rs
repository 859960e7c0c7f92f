//! The stable text form of the AST: canonical `.gd` source, one statement per line, every
//! compound expression in parentheses so the parser's grouping is visible. Parsing the
//! printed text gives back the same AST (spans aside), which the tests check.

use crate::ast::*;
use std::fmt::Write;

/// Prints a whole file.
pub fn file_text(file: &File) -> String {
    let mut out = String::new();
    for f in &file.fns {
        let params: Vec<String> = f.params.iter().map(param_text).collect();
        let ret = f.ret.as_ref().map(|t| format!(" -> {}", type_text(t))).unwrap_or_default();
        let _ = writeln!(out, "fn {}({}){ret} {{", f.name.name, params.join(", "));
        block_body(&mut out, &f.body, 1);
        out.push_str("}\n\n");
    }
    for u in &file.uses {
        let _ = writeln!(out, "use \"{}\"\n", u.path);
    }
    for o in &file.optimizers {
        if let Some(inst) = &o.instance {
            let args: Vec<&str> = inst.args.iter().map(|a| a.name.as_str()).collect();
            let _ = writeln!(out, "optimizer {} = {}({})\n", o.name.name, inst.wrapper.name, args.join(", "));
            continue;
        }
        let params: Vec<&str> = o.part_params.iter().map(|p| p.name.as_str()).collect();
        let params = if params.is_empty() { String::new() } else { format!("({})", params.join(", ")) };
        let _ = writeln!(out, "optimizer {}{params} {{", o.name.name);
        for part in &o.parts {
            match &part.target {
                Some(t) => writeln!(out, "  part {} = {}", part.name.name, t.name),
                None => writeln!(out, "  part {}", part.name.name),
            }
            .expect("writing to a String");
        }
        for h in &o.hypers {
            let ty = h.ty.map(|(t, _)| format!(": {}", scalar_text(t))).unwrap_or_default();
            let range = h
                .range
                .as_ref()
                .map(|(lo, hi)| format!(" in {}..={}", expr_text(lo), expr_text(hi)))
                .unwrap_or_default();
            let optional = if h.optional { "optional " } else { "" };
            let _ = writeln!(out, "  {optional}hyper {}{ty} = {}{range}", h.name.name, expr_text(&h.default));
        }
        for s in &o.states {
            let shape = match (s.bf16, s.shape.as_ref()) {
                (true, Some(sh)) => format!(": bf16 {}", shape_text(sh)),
                (true, None) => ": bf16".to_string(),
                (false, Some(sh)) => format!(": {}", shape_text(sh)),
                (false, None) => String::new(),
            };
            let init = s.init.as_ref().map(|e| format!(" = {}", expr_text(e))).unwrap_or_default();
            let _ = writeln!(out, "  state {}{shape}{init}", s.name.name);
        }
        for i in &o.inputs {
            let optional = if i.optional { "optional " } else { "" };
            let shape = i.shape.as_ref().map(|sh| format!(": {}", shape_text(sh))).unwrap_or_default();
            let _ = writeln!(out, "  {optional}input {}{shape}", i.name.name);
        }
        for g in &o.globals {
            let _ = writeln!(out, "  global {} = {}", g.name.name, expr_text(&g.init));
        }
        for p in &o.prepares {
            out.push_str("  prepare {\n");
            block_body(&mut out, p, 2);
            out.push_str("  }\n");
        }
        for u in &o.updates {
            let _ = writeln!(out, "  update({}, {}) {{", param_text(&u.param), param_text(&u.grad));
            block_body(&mut out, &u.body, 2);
            out.push_str("  }\n");
        }
        out.push_str("}\n");
    }
    out
}

fn scalar_text(t: ScalarTy) -> &'static str {
    match t {
        ScalarTy::F32 => "f32",
        ScalarTy::Int => "int",
        ScalarTy::Bool => "bool",
    }
}

fn shape_text(s: &ShapeExpr) -> String {
    let mut dims: Vec<&str> = Vec::new();
    for (i, d) in s.dims.iter().enumerate() {
        dims.extend(s.ellipses.iter().filter(|(at, _)| *at == i).map(|_| "..."));
        dims.push(d.name.as_str());
    }
    dims.extend(s.ellipses.iter().filter(|(at, _)| *at == s.dims.len()).map(|_| "..."));
    format!("[{}]", dims.join(", "))
}

fn type_text(t: &TypeExpr) -> String {
    match t {
        TypeExpr::Scalar(s, _) => scalar_text(*s).to_string(),
        TypeExpr::AnyTensor(_) => "tensor".to_string(),
        TypeExpr::Shape(s) => shape_text(s),
    }
}

fn param_text(p: &Param) -> String {
    match &p.ty {
        Some(t) => format!("{}: {}", p.name.name, type_text(t)),
        None => p.name.name.clone(),
    }
}

fn block_body(out: &mut String, b: &Block, depth: usize) {
    for s in &b.stmts {
        stmt_text(out, s, depth);
    }
}

fn stmt_text(out: &mut String, s: &Stmt, depth: usize) {
    let pad = "  ".repeat(depth);
    match s {
        Stmt::Let { names, value, .. } if names.len() == 1 => {
            let _ = writeln!(out, "{pad}let {} = {}", names[0].name, expr_text(value));
        }
        Stmt::Let { names, value, .. } => {
            let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
            let _ = writeln!(out, "{pad}let ({}) = {}", names.join(", "), expr_text(value));
        }
        Stmt::Var { name, value, .. } => {
            let _ = writeln!(out, "{pad}var {} = {}", name.name, expr_text(value));
        }
        Stmt::Assign { target, op, value, .. } => {
            let op = match op {
                AssignOp::Set => "=",
                AssignOp::Add => "+=",
                AssignOp::Sub => "-=",
                AssignOp::Mul => "*=",
                AssignOp::Div => "/=",
            };
            let _ = writeln!(out, "{pad}{} {op} {}", target.name, expr_text(value));
        }
        Stmt::If { cond, then, otherwise, .. } => {
            let _ = writeln!(out, "{pad}if {} {{", expr_text(cond));
            block_body(out, then, depth + 1);
            if let Some(b) = otherwise {
                let _ = writeln!(out, "{pad}}} else {{");
                block_body(out, b, depth + 1);
            }
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::For { var, start, end, body, .. } => {
            let _ = writeln!(out, "{pad}for {} in {}..{} {{", var.name, expr_text(start), expr_text(end));
            block_body(out, body, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::Every { period, phase, body, .. } => {
            let at = phase.as_ref().map(|p| format!(" at {}", expr_text(p))).unwrap_or_default();
            let _ = writeln!(out, "{pad}every {}{at} {{", expr_text(period));
            block_body(out, body, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::With { name, value, body, .. } => {
            let _ = writeln!(out, "{pad}with {} = {} {{", name.name, expr_text(value));
            block_body(out, body, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::Return { value, .. } => {
            let _ = writeln!(out, "{pad}return {}", expr_text(value));
        }
    }
}

/// An expression with every operator application in parentheses.
pub fn expr_text(e: &Expr) -> String {
    match &e.kind {
        // Whole numbers print as integers (`5`, not `5.0`); others as the shortest text that
        // parses back to the same f64 (`1e-8`, `0.9`).
        ExprKind::Number(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", *v as i64),
        ExprKind::Number(v) => format!("{v:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Unary(UnOp::Neg, x) => format!("(-{})", expr_text(x)),
        ExprKind::Unary(UnOp::Not, x) => format!("(!{})", expr_text(x)),
        ExprKind::Binary(op, a, b) => format!("({} {} {})", expr_text(a), op.symbol(), expr_text(b)),
        ExprKind::Transpose(x) => format!("{}.T", expr_text(x)),
        ExprKind::Call(name, args) => {
            let args: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{} = {}", n.name, expr_text(&a.value)),
                    None => expr_text(&a.value),
                })
                .collect();
            format!("{}({})", name.name, args.join(", "))
        }
        ExprKind::Tuple(items) => {
            let items: Vec<String> = items.iter().map(expr_text).collect();
            format!("({})", items.join(", "))
        }
    }
}
