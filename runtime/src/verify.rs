//! Differential checking of a backend against the float64 reference interpreter: the same
//! deterministic random parameters, gradients and hyperparameters on both, every parameter
//! compared after every step within a tolerance derived from float32 rounding. `gdc verify`,
//! the agreement tests and the GPU check all use it.

use crate::{Backend, HyperTy, Optimizer, Options, ParamSpec, Program, RuntimeError};
use gdc_compiler::ir::{Op, BF16_BITS, F32_BITS, TF32_BITS};

/// Deterministic values in [-1, 1) (xorshift), the same for a seed on every machine.
pub fn noise(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

/// [`noise`] as float32.
pub fn noise_f32(seed: u64, n: usize) -> Vec<f32> {
    noise(seed, n).into_iter().map(|x| x as f32).collect()
}

/// Random hyperparameters within declared ranges: a float default in (0.5, 1) (a decay
/// rate) keeps 1 - d scaled by [0.5, 2); a zero default becomes [0, 0.9); any other float
/// is scaled by [0.5, 2); bools at random; ints anywhere in their range (capped at 12).
pub fn random_hypers(program: &Program, seed: u64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (i, h) in program.plan().module.hypers.iter().enumerate() {
        let u = noise(seed * 977 + i as u64, 1)[0].abs();
        let (lo, hi) = h.range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let value = match h.ty {
            HyperTy::Bool => f64::from(u8::from(u > 0.5)),
            HyperTy::Int => (lo.max(0.0) + (u * (hi.min(12.0) - lo.max(0.0) + 1.0)).floor()).min(hi.min(12.0)),
            HyperTy::F32 if h.default > 0.5 && h.default < 1.0 => {
                (1.0 - (1.0 - h.default) * (0.5 + 1.5 * u)).clamp(lo, hi)
            }
            HyperTy::F32 if h.default == 0.0 => (0.9 * u).clamp(lo, hi),
            HyperTy::F32 => (h.default * (0.5 + 1.5 * u)).clamp(lo, hi),
            HyperTy::Precision => [F32_BITS, TF32_BITS, BF16_BITS][((u * 3.0) as usize).min(2)],
        };
        out.push((h.name.clone(), value));
    }
    out
}

/// Deterministic random inputs for one step of a program that declares `input`s, for every
/// parameter `(name, shape)`: each required input on every step (a step that does not read
/// one leaves it unused), each optional one on about a third of the steps; an input's own
/// dimensions (`batch`) sized 1 to 8, the same for all of one parameter's inputs at a step.
/// `gdc verify`, the agreement and random differential tests and the battery use it.
pub fn random_inputs(
    m: &gdc_compiler::ir::Module,
    params: &[(String, Vec<usize>)],
    seed: u64,
    step: usize,
) -> Vec<gdc_compiler::golden::GivenInput> {
    let mut out = Vec::new();
    for (pi, (name, shape)) in params.iter().enumerate() {
        let key = seed * 7919 + (step * 131 + pi) as u64;
        let own = 1 + (noise(key, 1)[0].abs() * 8.0) as usize % 8;
        for (j, x) in m.inputs.iter().enumerate() {
            if x.optional && noise(key * 31 + j as u64, 1)[0] > -1.0 / 3.0 {
                continue;
            }
            let dims = gdc_compiler::inputs::shape_for(x, shape, own);
            let n = dims.iter().product();
            out.push(gdc_compiler::golden::GivenInput {
                param: name.clone(),
                name: x.name.clone(),
                shape: dims,
                data: noise(key * 17 + 1000 + j as u64, n),
            });
        }
    }
    out
}

/// The parameters after each step.
pub type Trajectory = Vec<Vec<Vec<f32>>>;

/// Runs `steps` steps of `program` on `options.backend` from deterministic data for `seed`
/// (seeds above 3 also draw random hyperparameters); returns the parameters after each step.
pub fn trajectory(
    program: &Program,
    specs: &[ParamSpec],
    options: Options,
    seed: u64,
    steps: usize,
) -> Result<Trajectory, RuntimeError> {
    let mut opt = Optimizer::with_options(program, specs, options)?;
    if seed > 3 {
        for (name, value) in random_hypers(program, seed) {
            opt.set_hyper(&name, value)?;
        }
    }
    let mut params: Vec<Vec<f32>> =
        specs.iter().enumerate().map(|(i, s)| noise_f32(seed + i as u64, s.numel())).collect();
    let mut out = Vec::new();
    for t in 0..steps {
        let grads: Vec<Vec<f32>> =
            specs.iter().enumerate().map(|(i, s)| noise_f32(seed * 1000 + (t * 50 + i) as u64, s.numel())).collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gviews: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        let named: Vec<(String, Vec<usize>)> = specs.iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
        let given = random_inputs(&program.plan().module, &named, seed, t);
        let data: Vec<Vec<f32>> = given.iter().map(|x| x.data.iter().map(|v| *v as f32).collect()).collect();
        let mut inputs = crate::Inputs::new();
        for (x, d) in given.iter().zip(&data) {
            inputs.add(&x.param, &x.name, &x.shape, d);
        }
        opt.step_with_inputs(&mut views, &gviews, &inputs)?;
        out.push(params.clone());
    }
    Ok(out)
}

/// How far a backend's trajectory is from the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    /// The worst error as a fraction of the tolerance (<= 1 agrees).
    pub worst: f64,
    /// Where the error first exceeded the tolerance, if it did.
    pub first: Option<String>,
    /// Finite reference values, and all of them (a comparison of NaNs is vacuous).
    pub finite: usize,
    pub total: usize,
    /// Values outside the tolerance of the float64 reference but within that of the
    /// float32-rounded one ([`Backend::InterpF32`]), in a program with a discontinuous
    /// operation: a `sign` or comparison that flipped on a value exactly zero in float32
    /// (the backend's, and the right result in float32) and tiny in float64. Counted, not
    /// failed; [`reconcile`] says when such a second opinion is asked.
    pub flipped: usize,
}

/// Compares `got` with the reference `want`. Each step moves a parameter by about the
/// learning rate; float32 rounding of the update and of the parameter bounds the difference:
/// the tolerance is 1e-4 of the parameter's largest finite magnitude (at least 1e-4). Equal
/// NaNs and equal infinities agree.
pub fn compare(want: &Trajectory, got: &Trajectory, specs: &[ParamSpec]) -> Agreement {
    compare_within(want, got, specs, 1e-4)
}

/// [`compare`] within `rel` of each parameter's largest finite magnitude. A program with
/// bf16 state or products of a lower precision (bf16, TF32) is compared within 2e-3 (about
/// a bfloat16 rounding step, 2^-9; see [`tolerance`]).
pub fn compare_within(want: &Trajectory, got: &Trajectory, specs: &[ParamSpec], rel: f64) -> Agreement {
    compare_with_second(want, None, got, specs, rel)
}

/// [`compare_within`], where a value outside the tolerance of `want` that is within that of
/// `second` (the float32-rounded reference) counts as [`Agreement::flipped`].
fn compare_with_second(
    want: &Trajectory,
    second: Option<&Trajectory>,
    got: &Trajectory,
    specs: &[ParamSpec],
    rel: f64,
) -> Agreement {
    let mut a = Agreement { worst: 0.0, first: None, finite: 0, total: 0, flipped: 0 };
    let scale_of = |wp: &[f32]| wp.iter().filter(|x| x.is_finite()).fold(0.0f32, |m, x| m.max(x.abs())).max(1.0);
    let error = |x: f32, scale: f32, y: f32| {
        let same = (x.is_nan() && y.is_nan()) || (x.is_infinite() && x == y);
        let err = if same { 0.0 } else { f64::from((x - y).abs()) / (rel * f64::from(scale)) };
        if err.is_nan() {
            f64::INFINITY
        } else {
            err
        }
    };
    for (t, (w, g)) in want.iter().zip(got).enumerate() {
        for (pi, (wp, gp)) in w.iter().zip(g).enumerate() {
            let scale = scale_of(wp);
            let second = second.map(|s| (&s[t][pi], scale_of(&s[t][pi])));
            for (j, (x, y)) in wp.iter().zip(gp).enumerate() {
                a.total += 1;
                a.finite += usize::from(x.is_finite());
                let mut err = error(*x, scale, *y);
                let second_err = second.filter(|_| err > 1.0).map(|(s, scale)| error(s[j], scale, *y));
                if let Some(e) = second_err.filter(|e| *e <= 1.0) {
                    a.flipped += 1;
                    err = e;
                }
                if err > 1.0 && a.first.is_none() {
                    let also =
                        second.map(|(s, _)| format!(", float32-rounded interpreter {}", s[j])).unwrap_or_default();
                    a.first = Some(format!(
                        "step {} {}{:?}[{j}]: interpreter {x}{also}, backend {y}",
                        t + 1,
                        specs[pi].name,
                        specs[pi].shape
                    ));
                }
                a.worst = a.worst.max(err);
            }
        }
    }
    a
}

/// Whether `plan` steps with an operation whose result jumps: `sign`, a comparison (and so a
/// `where` on it), `%`, `sort_perm`. Only such a program may flip on a float32 zero. The
/// gradient check's comparison (`plan/check.rs`) is not part of the step.
pub fn has_discontinuity(plan: &gdc_compiler::plan::Plan) -> bool {
    use gdc_compiler::ir::{Binary as B, Func, Unary};
    use gdc_compiler::plan::Item;
    let jumps = |op: &Op| {
        matches!(
            op,
            Op::Unary(Unary::Sign)
                | Op::Binary(B::Eq | B::Ne | B::Lt | B::Le | B::Gt | B::Ge | B::Rem)
                | Op::SortPerm
                | Op::EigvecsDesc(_)
        )
    };
    let any =
        |f: &Func, skip: &[gdc_compiler::ir::Value]| f.values().any(|v| !skip.contains(&v) && jumps(&f.inst(v).op));
    let m = &plan.module;
    any(&m.prepare, &[])
        || m.variants.iter().zip(&plan.variants).any(|(v, vp)| {
            let check = vp.update.check.and_then(|c| match &vp.update.items[c.item] {
                Item::Kernel(k) => Some(k.body.clone()),
                Item::Lib(_) => None,
            });
            any(&v.init, &[]) || any(&v.update, &check.unwrap_or_default())
        })
}

/// Compares a backend's trajectory `got` with the float64 reference `want` within
/// [`tolerance`]; when that fails in a program with a discontinuous operation
/// ([`has_discontinuity`]), asks `float32_reference` for the float32-rounded reference's
/// trajectory and counts the values only it explains as [`Agreement::flipped`]. A value
/// that neither reference explains is still a disagreement.
pub fn reconcile<E>(
    program: &Program,
    want: &Trajectory,
    got: &Trajectory,
    specs: &[ParamSpec],
    float32_reference: impl FnOnce() -> Result<Trajectory, E>,
) -> Result<Agreement, E> {
    let rel = tolerance(&program.plan().module);
    let a = compare_within(want, got, specs, rel);
    if a.first.is_none() || !has_discontinuity(program.plan()) {
        return Ok(a);
    }
    let second = float32_reference()?;
    Ok(compare_with_second(want, Some(&second), got, specs, rel))
}

/// Runs `seed`'s case on `options.backend` and on the interpreter and compares them
/// ([`reconcile`]).
pub fn check(
    program: &Program,
    specs: &[ParamSpec],
    options: Options,
    seed: u64,
    steps: usize,
) -> Result<Agreement, RuntimeError> {
    // The backend first: a missing GPU is reported before the slow reference runs.
    let got = trajectory(program, specs, options, seed, steps)?;
    let want = trajectory(program, specs, Options { backend: Backend::Interp, ..options }, seed, steps)?;
    reconcile(program, &want, &got, specs, || {
        trajectory(program, specs, Options { backend: Backend::InterpF32, ..options }, seed, steps)
    })
}

/// The relative tolerance [`check`] compares a program within: 1e-4, or 2e-3 for a program
/// with bf16 state or a product that may run in bf16 or TF32. The float64 reference and a
/// float32 backend can round a bf16 state, or a product's operand, to neighbouring values.
pub fn tolerance(m: &gdc_compiler::ir::Module) -> f64 {
    let reduced_products = m
        .funcs()
        .into_iter()
        .any(|(_, f)| f.insts.iter().any(|i| matches!(i.op, Op::MatMul { .. }) && i.args.len() == 3));
    if reduced_products || m.states.iter().any(|s| s.bf16) {
        2e-3
    } else {
        1e-4
    }
}
