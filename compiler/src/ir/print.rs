//! The stable text form of the IR, one instruction per line (`v4 = mul v2, v3 : like(p)`),
//! entity names matching handles. `read.rs` parses the same text back.

use super::*;
use gdc_dsl::types::Elem;
use std::fmt::Write;

pub fn type_text(ty: &Ty) -> String {
    let shape = match &ty.shape {
        Shape::Scalar => String::new(),
        s => s.to_string(),
    };
    match (ty.elem, shape.is_empty()) {
        (Elem::Num, true) => "f32".into(),
        (Elem::Bool, true) => "bool".into(),
        (Elem::Num, false) => shape,
        (Elem::Bool, false) => format!("bool {shape}"),
    }
}

pub fn unary_name(u: Unary) -> &'static str {
    match u {
        Unary::Neg => "neg",
        Unary::Not => "not",
        Unary::Sqrt => "sqrt",
        Unary::Rsqrt => "rsqrt",
        Unary::Exp => "exp",
        Unary::Log => "log",
        Unary::Abs => "abs",
        Unary::Sign => "sign",
        Unary::Cos => "cos",
    }
}

pub const UNARIES: [Unary; 9] =
    [Unary::Neg, Unary::Not, Unary::Sqrt, Unary::Rsqrt, Unary::Exp, Unary::Log, Unary::Abs, Unary::Sign, Unary::Cos];

pub fn binary_name(b: Binary) -> &'static str {
    match b {
        Binary::Add => "add",
        Binary::Sub => "sub",
        Binary::Mul => "mul",
        Binary::Div => "div",
        Binary::Rem => "rem",
        Binary::Pow => "pow",
        Binary::Min => "min",
        Binary::Max => "max",
        Binary::Eq => "eq",
        Binary::Ne => "ne",
        Binary::Lt => "lt",
        Binary::Le => "le",
        Binary::Gt => "gt",
        Binary::Ge => "ge",
        Binary::And => "and",
        Binary::Or => "or",
    }
}

pub const BINARIES: [Binary; 16] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Rem,
    Binary::Pow,
    Binary::Min,
    Binary::Max,
    Binary::Eq,
    Binary::Ne,
    Binary::Lt,
    Binary::Le,
    Binary::Gt,
    Binary::Ge,
    Binary::And,
    Binary::Or,
];

/// The operation's mnemonic with its immediates, e.g. `hyper lr`, `reduce.sum axis=1`.
pub fn op_text(m: &Module, op: &Op) -> String {
    match op {
        Op::Const(c) => format!("const {c:?}"),
        Op::Bool(b) => format!("bool {b}"),
        Op::Hyper(i) => format!("hyper {}", m.hypers[*i].name),
        Op::Step => "step".into(),
        Op::Shape(s) => format!(
            "shape {}",
            match s {
                ShapeScalar::Numel => "numel".to_string(),
                ShapeScalar::Rows => "rows".to_string(),
                ShapeScalar::Cols => "cols".to_string(),
                ShapeScalar::Rank => "rank".to_string(),
                ShapeScalar::WidthMult => "width_mult".to_string(),
                ShapeScalar::InfDims => "inf_dims".to_string(),
                ShapeScalar::RoleIn(mask) => format!("role={}", crate::ir::Role::mask_names(*mask, "|")),
                ShapeScalar::InputDim { input, axis } => format!("input={}.{axis}", m.inputs[*input as usize].name),
            }
        ),
        Op::Global(i) => format!("global {}", m.globals[*i].name),
        Op::PrepareOut(i) => format!("prepare_out {}", m.prepare_outs[*i].0),
        Op::Param => "param".into(),
        Op::Grad => "grad".into(),
        Op::Load(i) => format!("load {}", m.states[*i].name),
        Op::Input(i) => format!("input {}", m.inputs[*i].name),
        Op::Present(i) => format!("present {}", m.inputs[*i].name),
        Op::Unary(u) => unary_name(*u).into(),
        Op::Binary(b) => binary_name(*b).into(),
        Op::Select => "select".into(),
        Op::Broadcast => "broadcast".into(),
        Op::Eye => "eye".into(),
        Op::Reduce(k, axis) => {
            let k = match k {
                ReduceKind::Sum => "sum",
                ReduceKind::MaxAbs => "max_abs",
                ReduceKind::Max => "max",
            };
            match axis {
                Some(a) => format!("reduce.{k} axis={a}"),
                None => format!("reduce.{k}"),
            }
        }
        Op::AcrossParams(k) => match k {
            ReduceKind::Sum => "across.sum".into(),
            ReduceKind::MaxAbs => "across.max_abs".into(),
            ReduceKind::Max => "across.max".into(),
        },
        Op::MatMul { ta, tb, sym } => {
            let layout = match (ta, tb) {
                (false, false) => "",
                (true, false) => ".tn",
                (false, true) => ".nt",
                (true, true) => ".tt",
            };
            format!("matmul{layout}{}", if *sym { ".sym" } else { "" })
        }
        Op::Transpose => "transpose".into(),
        Op::Outer => "outer".into(),
        Op::AxisMin => "axis_min".into(),
        Op::AxisMax => "axis_max".into(),
        Op::InvRoot(p, RootMethod::Eigh) => with_precision("inv_root", *p),
        Op::InvRoot(p, RootMethod::Newton) => format!("{}.newton", with_precision("inv_root", *p)),
        Op::Eigvecs(p) => with_precision("eigvecs", *p),
        Op::Eigvals(p) => with_precision("eigvals", *p),
        Op::EigvecsDesc(p) => with_precision("eigvecs.desc", *p),
        Op::Qr(p) => with_precision("qr", *p),
        Op::SortPerm => "sort_perm".into(),
        Op::Store(Target::Param) => "store param".into(),
        Op::Store(Target::State(i)) => format!("store state {}", m.states[*i].name),
        Op::Store(Target::Global(i)) => format!("store global {}", m.globals[*i].name),
    }
}

/// One instruction as a line (without indentation).
pub fn inst_text(m: &Module, func: &Func, v: Value) -> String {
    let inst = func.inst(v);
    let mut s = format!("{v} = {}", op_text(m, &inst.op));
    let args: Vec<String> = inst.args.iter().map(|a| a.to_string()).collect();
    if !args.is_empty() {
        let _ = write!(s, " {}", args.join(", "));
    }
    if let Some(ty) = &inst.ty {
        let _ = write!(s, " : {}", type_text(ty));
    }
    if let Some(g) = inst.guard {
        let _ = write!(s, " if {g}");
    }
    s
}

pub fn hyper_text(h: &HyperInfo) -> String {
    let (ty, default) = match h.ty {
        HyperTy::F32 => ("f32", format!("{:?}", h.default)),
        HyperTy::Int => ("int", format!("{}", h.default)),
        HyperTy::Bool => ("bool", format!("{}", h.default != 0.0)),
        HyperTy::Precision => ("precision", precision_name(h.default).to_string()),
    };
    let optional = if h.optional { "optional " } else { "" };
    let mut s = format!("{optional}hyper {}: {ty} = {default}", h.name);
    if let Some((lo, hi)) = h.range {
        let _ = write!(s, " in {lo:?}..={hi:?}");
    }
    s
}

/// The module header: name, hyperparameters, state, inputs and globals.
pub fn header_text(m: &Module) -> String {
    let mut s = format!("optimizer {}\n", m.name);
    for h in &m.hypers {
        let _ = writeln!(s, "{}", hyper_text(h));
    }
    for st in &m.states {
        let storage = if st.bf16 { "bf16 " } else { "" };
        let _ = writeln!(s, "state {}: {storage}{}", st.name, type_text(&Ty::num(st.shape.clone())));
    }
    for i in &m.inputs {
        let optional = if i.optional { " optional" } else { "" };
        let _ = writeln!(s, "input {}: {}{optional}", i.name, type_text(&Ty::num(i.shape.clone())));
    }
    for g in &m.globals {
        let _ = writeln!(s, "global {} = {:?}", g.name, g.init);
    }
    s
}

/// The whole module as text.
pub fn module_text(m: &Module) -> String {
    let mut s = header_text(m);
    for (label, func) in m.funcs() {
        let _ = writeln!(s, "\nfunc {label} {{");
        for v in func.values() {
            let _ = writeln!(s, "  {}", inst_text(m, func, v));
        }
        if func.kind == FuncKind::Prepare {
            for (name, v) in &m.prepare_outs {
                let _ = writeln!(s, "  out {name} = {v}");
            }
        }
        s.push_str("}\n");
    }
    s
}

/// A decomposition's name, suffixed `.f32` when it runs in float32 (float64 is the default).
fn with_precision(name: &str, p: Precision) -> String {
    match p {
        Precision::F64 => name.to_string(),
        Precision::F32 => format!("{name}.f32"),
    }
}
