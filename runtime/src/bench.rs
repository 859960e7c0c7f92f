//! Measuring optimizer steps: wall-clock statistics over repeated runs, synthetic parameters
//! (mixed shapes, deterministic values), and the bytes a step moves as the kernel plan counts
//! them, so a step time can be read as effective bandwidth.

use crate::{ParamSpec, RuntimeError};
use gdc_compiler::interp::{bind, BoundParam};
use gdc_compiler::plan::{Buffer, FuncPlan, Item, Pass, Plan};
use gdc_dsl::types::Shape;
use std::time::Instant;

/// Wall-clock times of repeated runs, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Every timed run, in the order they ran.
    pub samples_s: Vec<f64>,
    /// The median (the mean of the middle two for an even count).
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
}

impl Stats {
    /// Statistics of the given samples (seconds). With no samples every figure is NaN.
    pub fn from_samples(samples_s: Vec<f64>) -> Stats {
        let mut sorted = samples_s.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let (median_s, min_s, max_s) = if n == 0 {
            (f64::NAN, f64::NAN, f64::NAN)
        } else if n % 2 == 1 {
            (sorted[n / 2], sorted[0], sorted[n - 1])
        } else {
            ((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0, sorted[0], sorted[n - 1])
        };
        Stats { samples_s, median_s, min_s, max_s }
    }
}

/// Runs `f` `warmup` times untimed, then `repeats` times, timing each run on its own.
pub fn measure(warmup: usize, repeats: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        f();
    }
    let samples = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    Stats::from_samples(samples)
}

/// The bytes one step moves, counted from the plan: for every parameter, each item of its
/// variant's update plan reads each of its input buffers once and writes each of its output
/// buffers once, 4 bytes (float32) per element; a library call reads its inputs and writes
/// its output once. A buffer's element count comes from its shape (`like(p)`: the parameter's
/// elements, `[rows]`: rows, `[rows, cols]`: rows·cols, `[rows, rows]`: rows², a scalar: 1).
///
/// Guards are taken to hold: an item under a guard (`every`, `if`) and a conditional write
/// (`if momentum != 0 { buf = ... }`) are counted as if they ran, so for hyperparameters that
/// switch a branch off this is an upper bound. State initialisation (the first step only) is
/// not counted. AdamW on `n` elements: 7·4·n bytes (reads p, g, m, v; writes p, m, v).
pub fn bytes_per_step(plan: &Plan, params: &[ParamSpec]) -> Result<u64, RuntimeError> {
    let named: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    let bound = bind(plan, &named)?;
    let mut total: u64 = 0;
    for bp in &bound {
        let update = &plan.variants[bp.variant].update;
        for (_, item) in update.items_of(Pass::Step) {
            let (mut read, mut written): (Vec<Buffer>, Vec<Buffer>) = match item {
                Item::Kernel(k) => {
                    (k.inputs.iter().map(|(_, b)| *b).collect(), k.outputs.iter().map(|o| o.buffer).collect())
                }
                Item::Lib(l) => (l.inputs.iter().map(|(_, b)| *b).collect(), vec![l.output]),
            };
            // Each buffer once per item, however many values it feeds.
            dedup(&mut read);
            dedup(&mut written);
            for b in read.iter().chain(&written) {
                let width = if matches!(b, Buffer::State(s) if plan.module.states[*s].bf16) { 2 } else { 4 };
                total = total.saturating_add(width * elements(plan, bp, update, *b));
            }
        }
    }
    Ok(total)
}

/// The optimizer state held for `params`: `(bytes as stored, bytes were every state
/// float32)`; the two differ by what `bf16` state saves.
pub fn state_bytes(plan: &Plan, params: &[ParamSpec]) -> Result<(u64, u64), RuntimeError> {
    let named: Vec<(String, Vec<usize>)> = params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    let bound = bind(plan, &named)?;
    let m = &plan.module;
    let (mut stored, mut f32_bytes) = (0u64, 0u64);
    for bp in &bound {
        let v = &m.variants[bp.variant];
        let used = crate::shared::state_use(m, &v.init, &v.update);
        let update = &plan.variants[bp.variant].update;
        for (s, st) in m.states.iter().enumerate().filter(|(s, _)| used[*s]) {
            let n = elements(plan, bp, update, Buffer::State(s));
            stored = stored.saturating_add(n * if st.bf16 { 2 } else { 4 });
            f32_bytes = f32_bytes.saturating_add(n * 4);
        }
    }
    Ok((stored, f32_bytes))
}

fn dedup(buffers: &mut Vec<Buffer>) {
    let mut seen = Vec::with_capacity(buffers.len());
    buffers.retain(|b| {
        let new = !seen.contains(b);
        seen.push(*b);
        new
    });
}

/// Elements of buffer `b` for bound parameter `bp`.
fn elements(plan: &Plan, bp: &BoundParam, fp: &FuncPlan, b: Buffer) -> u64 {
    let pattern = plan.variants[bp.variant].pattern;
    let shape = match b {
        Buffer::Param | Buffer::Grad => Shape::Like,
        Buffer::State(i) => plan.module.states.get(i).map_or(Shape::Like, |s| s.shape.clone()),
        // Inputs are counted as given, which `elements` cannot know: their declared shape
        // with the parameter's dimensions (an input's own dimension counts as its numel).
        Buffer::Input(i) => plan.module.inputs.get(i).map_or(Shape::Like, |s| s.shape.clone()),
        Buffer::Temp(t) => fp.temps.get(t).cloned().unwrap_or(Shape::Like),
    };
    let shape = if shape == Shape::Like { pattern.param_shape() } else { shape };
    gdc_compiler::interp::elements_of(&shape, bp) as u64
}

/// `n` deterministic pseudo-random values in `[-scale, scale)`, from a splitmix64 stream that
/// continues from `seed` (which is advanced, so successive calls give different values).
pub fn fill_uniform(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // splitmix64
            *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

/// The shapes of `tensors` tensors (1 ≤ tensors ≤ numel) holding exactly `numel` elements.
/// One tensor is a vector `[numel]`. More follow a transformer layer, `[3d, d]` (qkv),
/// `[d, d]` (output), `[d]` (norm), `[4d, d]` (up), `[d, 4d]` (down), `[d]` (norm), repeated,
/// with the largest `d` that fits; the elements left over go to the last vector. When even
/// `d = 1` does not fit, every tensor is a vector of about `numel / tensors` elements.
pub fn mixed_shapes(numel: usize, tensors: usize) -> Vec<Vec<usize>> {
    if tensors <= 1 {
        return vec![vec![numel]];
    }
    // (a, b): a matrix [a·d, b·d]; (0, 0): a vector [d].
    const LAYER: [(usize, usize); 6] = [(3, 1), (1, 1), (0, 0), (4, 1), (1, 4), (0, 0)];
    let kinds: Vec<(usize, usize)> = (0..tensors).map(|i| LAYER[i % LAYER.len()]).collect();
    let quad: usize = kinds.iter().map(|(a, b)| a * b).sum();
    let lin = kinds.iter().filter(|k| k.0 == 0).count();
    let total = |d: usize| quad.saturating_mul(d).saturating_mul(d).saturating_add(lin.saturating_mul(d));
    if total(1) > numel {
        let (each, extra) = (numel / tensors, numel % tensors);
        return (0..tensors).map(|i| vec![each + usize::from(i < extra)]).collect();
    }
    let mut d = ((numel as f64 / quad as f64).sqrt() as usize).max(1);
    while total(d) > numel {
        d -= 1;
    }
    while total(d + 1) <= numel {
        d += 1;
    }
    let mut out: Vec<Vec<usize>> =
        kinds.iter().map(|&(a, b)| if a == 0 { vec![d] } else { vec![a * d, b * d] }).collect();
    let rest = numel - total(d);
    match out.iter().rposition(|s| s.len() == 1) {
        Some(i) => out[i][0] += rest,
        None => {
            let last = out.len() - 1;
            let n: usize = out[last].iter().product();
            out[last] = vec![n + rest];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Program;

    fn source(name: &str) -> String {
        let path = format!("{}/../examples/optimizers/{name}.gd", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).expect("example optimizer")
    }

    fn bytes(name: &str, shapes: &[&[usize]]) -> u64 {
        let program = Program::compile(&source(name)).expect("compiles");
        let specs: Vec<ParamSpec> =
            shapes.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("p{i}"), s)).collect();
        bytes_per_step(program.plan(), &specs).expect("binds")
    }

    #[test]
    fn adamw_moves_seven_floats_per_element() {
        assert_eq!(bytes("adamw", &[&[1000]]), 7 * 4 * 1000);
        assert_eq!(bytes("adamw", &[&[64, 48], &[48], &[]]), 7 * 4 * (64 * 48 + 48 + 1));
    }

    #[test]
    fn guarded_writes_count_as_if_they_ran() {
        // sgd: reads p, g, buf; writes p and (if momentum != 0) buf.
        assert_eq!(bytes("sgd", &[&[10, 10]]), 5 * 4 * 100);
        // lion: reads p, g, m; writes p, m.
        assert_eq!(bytes("lion", &[&[7]]), 5 * 4 * 7);
        // rmsprop: reads p, g and three states; writes p and the three states.
        assert_eq!(bytes("rmsprop", &[&[3, 5]]), 9 * 4 * 15);
    }

    #[test]
    fn factored_state_and_temporaries_count_by_their_own_shape() {
        // adafactor on [r, c]: five kernels moving 7·r·c + 5·r + 5·c floats (temporaries and
        // the [rows] and [cols] states included; the decay term `p * ...` is computed in the
        // last kernel, which reads p, rather than written to a temporary by the first; the new
        // row_var and col_var are read back from their states, not from temporaries).
        let (r, c) = (4u64, 6u64);
        assert_eq!(bytes("adafactor", &[&[4, 6]]), 4 * (7 * r * c + 5 * r + 5 * c));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let program = Program::compile(&source("adamw")).expect("compiles");
        let huge = [ParamSpec::new("w", &[1 << 20, 1 << 12])];
        assert!(matches!(bytes_per_step(program.plan(), &huge), Err(RuntimeError::Step(_))));
    }

    #[test]
    fn mixed_shapes_total_numel_exactly_and_mix_sizes() {
        for (numel, tensors) in [(1 << 24, 300), (4096, 7), (1000, 2), (10, 10), (11, 9), (1 << 20, 1), (100, 6)] {
            let s = mixed_shapes(numel, tensors);
            assert_eq!(s.len(), tensors, "{numel} {tensors}");
            assert_eq!(s.iter().map(|t| t.iter().product::<usize>()).sum::<usize>(), numel, "{numel} {tensors}");
            assert!(s.iter().all(|t| t.iter().product::<usize>() >= 1));
        }
        let s = mixed_shapes(1 << 24, 300);
        assert!(s.iter().any(|t| t.len() == 2) && s.iter().any(|t| t.len() == 1));
        assert_eq!(s[0], vec![3 * s[1][0], s[1][0]]);
        assert_eq!(mixed_shapes(1 << 20, 1), vec![vec![1 << 20]]);
        assert_eq!(mixed_shapes(10, 10), vec![vec![1]; 10]);
    }

    #[test]
    fn fill_uniform_is_deterministic_and_in_range() {
        let (mut a, mut b) = (7, 7);
        let x = fill_uniform(&mut a, 1000, 0.5);
        assert_eq!(x, fill_uniform(&mut b, 1000, 0.5));
        assert!(x.iter().all(|v| (-0.5..0.5).contains(v)));
        assert!(x.iter().any(|v| *v < -0.4) && x.iter().any(|v| *v > 0.4));
    }

    #[test]
    fn stats_of_samples() {
        let s = Stats::from_samples(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median_s, s.min_s, s.max_s), (2.0, 1.0, 3.0));
        assert_eq!(s.samples_s, vec![3.0, 1.0, 2.0]);
        let s = Stats::from_samples(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median_s, s.min_s, s.max_s), (2.5, 1.0, 4.0));
        assert!(Stats::from_samples(vec![]).median_s.is_nan());
    }

    #[test]
    fn measure_runs_warmup_then_repeats() {
        let mut calls = 0;
        let s = measure(2, 5, || calls += 1);
        assert_eq!(calls, 7);
        assert_eq!(s.samples_s.len(), 5);
        assert!(s.min_s <= s.median_s && s.median_s <= s.max_s);
    }
}
