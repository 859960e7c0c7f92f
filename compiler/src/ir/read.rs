//! Reads the IR text form of `print.rs` back into a module, so a single pass can be tested on
//! hand-written IR. Errors name the line.

use super::print::{binary_name, unary_name, BINARIES, UNARIES};
use super::*;
use gdc_dsl::types::Elem;

pub fn read_module(text: &str) -> Result<Module, String> {
    let mut m = Module {
        name: String::new(),
        hypers: Vec::new(),
        states: Vec::new(),
        inputs: Vec::new(),
        globals: Vec::new(),
        prepare: Func::new(FuncKind::Prepare),
        prepare_outs: Vec::new(),
        variants: Vec::new(),
        optimizers: Vec::new(),
        routes: Vec::new(),
    };
    // Which function instructions go to: None outside a function.
    let mut current: Option<(FuncKind, usize)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |msg: &str| format!("line {}: {msg}: `{line}`", n + 1);
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("optimizer ") {
            m.name = rest.trim().to_string();
            m.optimizers = vec![m.name.clone()];
        } else if let Some(rest) = line.strip_prefix("hyper ") {
            m.hypers.push(read_hyper(rest, false).ok_or_else(|| err("bad hyper"))?);
        } else if let Some(rest) = line.strip_prefix("optional hyper ") {
            m.hypers.push(read_hyper(rest, true).ok_or_else(|| err("bad hyper"))?);
        } else if let Some(rest) = line.strip_prefix("state ") {
            let (name, ty) = rest.split_once(':').ok_or_else(|| err("bad state"))?;
            let (bf16, ty) = match ty.trim().strip_prefix("bf16 ") {
                Some(rest) => (true, rest),
                None => (false, ty.trim()),
            };
            let ty = read_type(ty).ok_or_else(|| err("bad state type"))?;
            m.states.push(StateInfo { name: name.trim().into(), bf16, shape: ty.shape });
        } else if let Some(rest) = line.strip_prefix("input ") {
            let (name, ty) = rest.split_once(':').ok_or_else(|| err("bad input"))?;
            let (ty, optional) = match ty.trim().strip_suffix(" optional") {
                Some(t) => (t, true),
                None => (ty.trim(), false),
            };
            let ty = read_type(ty).ok_or_else(|| err("bad input type"))?;
            m.inputs.push(InputInfo { name: name.trim().into(), shape: ty.shape, optional });
        } else if let Some(rest) = line.strip_prefix("global ") {
            let (name, init) = rest.split_once('=').ok_or_else(|| err("bad global"))?;
            let init = init.trim().parse().map_err(|_| err("bad global value"))?;
            m.globals.push(GlobalInfo { name: name.trim().into(), init });
        } else if let Some(rest) = line.strip_prefix("func ") {
            let label = rest.trim_end_matches('{').trim();
            let pattern = if label.contains("[..., rows, cols]") {
                Pattern::Batched
            } else if label.contains("[rows, cols]") {
                Pattern::Matrix
            } else if label.contains("[rows]") {
                Pattern::Vector
            } else {
                Pattern::Any
            };
            current = if label == "prepare" {
                Some((FuncKind::Prepare, 0))
            } else if label.starts_with("init") {
                m.variants.push(Variant {
                    pattern,
                    optimizer: 0,
                    init: Func::new(FuncKind::Init),
                    update: Func::new(FuncKind::Update),
                });
                Some((FuncKind::Init, m.variants.len() - 1))
            } else if label.starts_with("update") {
                if m.variants.last().is_none_or(|v| v.pattern != pattern || !v.update.insts.is_empty()) {
                    m.variants.push(Variant {
                        pattern,
                        optimizer: 0,
                        init: Func::new(FuncKind::Init),
                        update: Func::new(FuncKind::Update),
                    });
                }
                Some((FuncKind::Update, m.variants.len() - 1))
            } else {
                return Err(err("unknown function"));
            };
        } else if line == "}" {
            current = None;
        } else if let Some(rest) = line.strip_prefix("out ") {
            let (name, v) = rest.split_once('=').ok_or_else(|| err("bad out"))?;
            let v = read_value(v.trim()).ok_or_else(|| err("bad value"))?;
            m.prepare_outs.push((name.trim().into(), v));
        } else {
            let (kind, idx) = current.ok_or_else(|| err("instruction outside a function"))?;
            let inst = read_inst(&m, line).map_err(|e| err(&e))?;
            let func = match kind {
                FuncKind::Prepare => &mut m.prepare,
                FuncKind::Init => &mut m.variants[idx].init,
                FuncKind::Update => &mut m.variants[idx].update,
            };
            let expected = format!("v{}", func.insts.len());
            if !line.starts_with(&format!("{expected} ")) {
                return Err(err(&format!("expected the next value to be {expected}")));
            }
            func.insts.push(inst);
        }
    }
    Ok(m)
}

fn read_hyper(rest: &str, optional: bool) -> Option<HyperInfo> {
    let (name, rest) = rest.split_once(':')?;
    let (ty, rest) = rest.split_once('=')?;
    let ty = match ty.trim() {
        "f32" => HyperTy::F32,
        "int" => HyperTy::Int,
        "bool" => HyperTy::Bool,
        "precision" => HyperTy::Precision,
        _ => return None,
    };
    let (default, range) = match rest.split_once(" in ") {
        Some((d, r)) => {
            let (lo, hi) = r.split_once("..=")?;
            (d, Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)))
        }
        None => (rest, None),
    };
    let default = match default.trim() {
        "true" => 1.0,
        "false" => 0.0,
        d => match gdc_dsl::builtins::precision_value(d) {
            Some(bits) => bits,
            None => d.parse().ok()?,
        },
    };
    Some(HyperInfo { name: name.trim().into(), ty, default, range, optional })
}

pub fn read_type(t: &str) -> Option<Ty> {
    let (elem, shape) = match t.strip_prefix("bool") {
        Some(rest) => (Elem::Bool, rest.trim()),
        None => (Elem::Num, t.trim()),
    };
    let shape = match shape {
        "f32" | "" => Shape::Scalar,
        "like(p)" => Shape::Like,
        s => {
            let inner = s.strip_prefix('[')?.strip_suffix(']')?;
            Shape::from_names(inner.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect())
        }
    };
    Some(Ty { elem, shape })
}

fn read_value(s: &str) -> Option<Value> {
    Some(Value::new(s.trim().strip_prefix('v')?.parse().ok()?))
}

fn index_of(names: impl Iterator<Item = String>, name: &str) -> Result<usize, String> {
    names.into_iter().position(|n| n == name).ok_or_else(|| format!("unknown name `{name}`"))
}

fn read_inst(m: &Module, line: &str) -> Result<Inst, String> {
    let (_, rhs) = line.split_once(" = ").ok_or("expected `vN = ...`")?;
    let (rhs, guard) = match rhs.rsplit_once(" if ") {
        Some((r, g)) => (r, Some(read_value(g).ok_or("bad guard")?)),
        None => (rhs, None),
    };
    let (rhs, ty) = match rhs.rsplit_once(" : ") {
        Some((r, t)) => (r, Some(read_type(t).ok_or("bad type")?)),
        None => (rhs, None),
    };
    let mut words = rhs.split_whitespace();
    let mnemonic = words.next().ok_or("empty instruction")?;
    let rest: Vec<&str> = words.collect();
    // Immediates come first, then comma-separated value arguments.
    let (imm, args) =
        match rest.iter().position(|w| w.starts_with('v') && w[1..].trim_end_matches(',').parse::<usize>().is_ok()) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (&rest[..], &[][..]),
        };
    let args: Vec<Value> =
        args.iter().map(|a| read_value(a.trim_end_matches(','))).collect::<Option<_>>().ok_or("bad argument")?;
    let first = |what: &str| imm.first().copied().ok_or(format!("`{mnemonic}` needs {what}"));
    let op = match mnemonic {
        "const" => Op::Const(first("a number")?.parse().map_err(|_| "bad number")?),
        "bool" => Op::Bool(first("true or false")? == "true"),
        "hyper" => Op::Hyper(index_of(m.hypers.iter().map(|h| h.name.clone()), first("a name")?)?),
        "step" => Op::Step,
        "shape" => Op::Shape(match first("numel, rows or cols")? {
            "numel" => ShapeScalar::Numel,
            "rows" => ShapeScalar::Rows,
            "cols" => ShapeScalar::Cols,
            "rank" => ShapeScalar::Rank,
            "width_mult" => ShapeScalar::WidthMult,
            "inf_dims" => ShapeScalar::InfDims,
            r if r.starts_with("input=") => {
                let (name, axis) = r["input=".len()..].rsplit_once('.').ok_or("bad input dimension")?;
                let input = index_of(m.inputs.iter().map(|i| i.name.clone()), name)? as u8;
                ShapeScalar::InputDim { input, axis: axis.parse().map_err(|_| "bad input axis")? }
            }
            r if r.starts_with("role=") => {
                let mut mask = 0u8;
                for name in r["role=".len()..].split('|') {
                    mask |= crate::ir::Role::from_name(name).ok_or("unknown role")?.bit();
                }
                ShapeScalar::RoleIn(mask)
            }
            _ => return Err("unknown shape scalar".into()),
        }),
        "global" => Op::Global(index_of(m.globals.iter().map(|g| g.name.clone()), first("a name")?)?),
        "prepare_out" => Op::PrepareOut(index_of(m.prepare_outs.iter().map(|p| p.0.clone()), first("a name")?)?),
        "param" => Op::Param,
        "grad" => Op::Grad,
        "load" => Op::Load(index_of(m.states.iter().map(|s| s.name.clone()), first("a name")?)?),
        "input" => Op::Input(index_of(m.inputs.iter().map(|s| s.name.clone()), first("a name")?)?),
        "present" => Op::Present(index_of(m.inputs.iter().map(|s| s.name.clone()), first("a name")?)?),
        "select" => Op::Select,
        "broadcast" => Op::Broadcast,
        "eye" => Op::Eye,
        mm if mm.starts_with("matmul") => {
            let rest = &mm["matmul".len()..];
            let (layout, sym) = match rest.strip_suffix(".sym") {
                Some(layout) => (layout, true),
                None => (rest, false),
            };
            let (ta, tb) = match layout {
                "" => (false, false),
                ".tn" => (true, false),
                ".nt" => (false, true),
                ".tt" => (true, true),
                _ => return Err(format!("unknown operation `{mm}`")),
            };
            Op::MatMul { ta, tb, sym }
        }
        "transpose" => Op::Transpose,
        "outer" => Op::Outer,
        "axis_min" => Op::AxisMin,
        "axis_max" => Op::AxisMax,
        "inv_root" => Op::InvRoot(Precision::F64, RootMethod::Eigh),
        "inv_root.f32" => Op::InvRoot(Precision::F32, RootMethod::Eigh),
        "inv_root.newton" => Op::InvRoot(Precision::F64, RootMethod::Newton),
        "inv_root.f32.newton" => Op::InvRoot(Precision::F32, RootMethod::Newton),
        "eigvecs" => Op::Eigvecs(Precision::F64),
        "eigvecs.f32" => Op::Eigvecs(Precision::F32),
        "eigvals" => Op::Eigvals(Precision::F64),
        "eigvals.f32" => Op::Eigvals(Precision::F32),
        "eigvecs.desc" => Op::EigvecsDesc(Precision::F64),
        "eigvecs.desc.f32" => Op::EigvecsDesc(Precision::F32),
        "qr" => Op::Qr(Precision::F64),
        "qr.f32" => Op::Qr(Precision::F32),
        "sort_perm" => Op::SortPerm,
        "across.sum" => Op::AcrossParams(ReduceKind::Sum),
        "across.max_abs" => Op::AcrossParams(ReduceKind::MaxAbs),
        "across.max" => Op::AcrossParams(ReduceKind::Max),
        "store" => match (first("a target")?, imm.get(1)) {
            ("param", _) => Op::Store(Target::Param),
            ("state", Some(n)) => Op::Store(Target::State(index_of(m.states.iter().map(|s| s.name.clone()), n)?)),
            ("global", Some(n)) => Op::Store(Target::Global(index_of(m.globals.iter().map(|g| g.name.clone()), n)?)),
            _ => return Err("bad store target".into()),
        },
        r if r.starts_with("reduce.") => {
            let kind = match &r[7..] {
                "sum" => ReduceKind::Sum,
                "max_abs" => ReduceKind::MaxAbs,
                "max" => ReduceKind::Max,
                _ => return Err("unknown reduction".into()),
            };
            let axis = imm
                .first()
                .and_then(|a| a.strip_prefix("axis="))
                .map(|a| a.parse())
                .transpose()
                .map_err(|_| "bad axis")?;
            Op::Reduce(kind, axis)
        }
        other => {
            if let Some(u) = UNARIES.iter().find(|u| unary_name(**u) == other) {
                Op::Unary(*u)
            } else if let Some(b) = BINARIES.iter().find(|b| binary_name(**b) == other) {
                Op::Binary(*b)
            } else {
                return Err(format!("unknown operation `{other}`"));
            }
        }
    };
    Ok(Inst { op, args, ty, guard })
}
