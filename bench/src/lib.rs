//! Hand-fused reference loops for the CPU step benchmark: for each optimizer, the same
//! arithmetic as its `.gd` file and the same reads and writes as gdc's kernel plan, in one
//! pass over memory, split into chunks over a rayon pool and written so the compiler
//! vectorizes it (safe Rust, zipped slices). It is the practical limit gdc's CPU backend is
//! measured against; `tests` checks it against gdc's reference interpreter.

use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;

/// The optimizers the benchmark covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    AdamW,
    Lion,
    Sgd,
    Adagrad,
    Rmsprop,
}

impl Opt {
    pub const ALL: [Opt; 5] = [Opt::AdamW, Opt::Lion, Opt::Sgd, Opt::Adagrad, Opt::Rmsprop];

    /// The name of its `.gd` file and of its `optimizer` item.
    pub fn name(self) -> &'static str {
        match self {
            Opt::AdamW => "adamw",
            Opt::Lion => "lion",
            Opt::Sgd => "sgd",
            Opt::Adagrad => "adagrad",
            Opt::Rmsprop => "rmsprop",
        }
    }

    pub fn parse(name: &str) -> Option<Opt> {
        Opt::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Its file in this workspace's optimizer library.
    pub fn source_path(self) -> PathBuf {
        example_path(self.name())
    }

    pub fn source(self) -> Result<String, String> {
        example_source(self.name())
    }

    /// Hyperparameters set away from their defaults for the benchmark: every branch taken, so
    /// the plan's guarded writes all happen and its byte count is what moves (sgd with
    /// momentum 0.9; rmsprop centered with momentum 0.9).
    pub fn bench_hypers(self) -> &'static [(&'static str, f64)] {
        match self {
            Opt::Sgd => &[("momentum", 0.9)],
            Opt::Rmsprop => &[("centered", 1.0), ("momentum", 0.9)],
            Opt::AdamW | Opt::Lion | Opt::Adagrad => &[],
        }
    }

    /// Its state buffers, in the order the `.gd` file declares them.
    pub fn states(self) -> &'static [&'static str] {
        match self {
            Opt::AdamW => &["m", "v"],
            Opt::Lion => &["m"],
            Opt::Sgd => &["buf"],
            Opt::Adagrad => &["sum_sq"],
            Opt::Rmsprop => &["square_avg", "grad_avg", "buf"],
        }
    }
}

/// Elements per work item: 128 KiB of each buffer.
const CHUNK: usize = 1 << 15;

/// The scalars of one step, computed once on the host (as gdc's plan hoists them).
#[derive(Clone, Copy)]
enum Scalars {
    AdamW { decay: f32, one_m_b1: f32, one_m_b2: f32, bc1: f32, bc2: f32, lr: f32, eps: f32 },
    Lion { lr: f32, one_m_b1: f32, one_m_b2: f32, wd: f32 },
    Sgd { lr: f32, wd: f32, momentum: f32, one_m_damp: f32, first: bool, nesterov: bool },
    Adagrad { clr: f32, wd: f32, eps: f32 },
    Rmsprop { lr: f32, wd: f32, one_m_alpha: f32, eps: f32, momentum: f32, centered: bool },
}

/// One chunk of one parameter: its gradient and (up to three) state slices.
struct Chunk<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    s: [&'a mut [f32]; 3],
}

/// A hand-fused optimizer over parameters of fixed sizes; owns their state.
pub struct Hand {
    opt: Opt,
    hypers: HashMap<String, f64>,
    /// `states[i][k]`: state `k` of parameter `i`, stored from `offset` on (see [`skewed`]).
    states: Vec<Vec<(Vec<f32>, usize)>>,
    step: u64,
    pool: rayon::ThreadPool,
}

impl Hand {
    /// `hypers`: every hyperparameter of the optimizer by name (as
    /// `gdc_runtime::Optimizer::hypers` lists them), so both run with the same values.
    pub fn new(opt: Opt, numels: &[usize], hypers: &[(String, f64)], threads: usize) -> Result<Hand, String> {
        let hypers: HashMap<String, f64> = hypers.iter().cloned().collect();
        let init = match opt {
            Opt::Adagrad => {
                *hypers.get("initial_accumulator_value").ok_or("adagrad needs initial_accumulator_value")?
            }
            _ => 0.0,
        } as f32;
        let states =
            numels.iter().map(|&n| (0..opt.states().len()).map(|k| skewed(init, n, k + 1)).collect()).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
        let hand = Hand { opt, hypers, states, step: 0, pool };
        hand.scalars(1)?;
        Ok(hand)
    }

    fn h(&self, name: &str) -> Result<f64, String> {
        self.hypers.get(name).copied().ok_or_else(|| format!("{} needs hyperparameter `{name}`", self.opt.name()))
    }

    fn scalars(&self, step: u64) -> Result<Scalars, String> {
        let t = step as f64;
        Ok(match self.opt {
            Opt::AdamW => {
                let (lr, b1, b2) = (self.h("lr")?, self.h("beta1")?, self.h("beta2")?);
                Scalars::AdamW {
                    decay: (1.0 - lr * self.h("weight_decay")?) as f32,
                    one_m_b1: (1.0 - b1) as f32,
                    one_m_b2: (1.0 - b2) as f32,
                    bc1: (1.0 - b1.powf(t)) as f32,
                    bc2: (1.0 - b2.powf(t)) as f32,
                    lr: lr as f32,
                    eps: self.h("eps")? as f32,
                }
            }
            Opt::Lion => Scalars::Lion {
                lr: self.h("lr")? as f32,
                one_m_b1: (1.0 - self.h("beta1")?) as f32,
                one_m_b2: (1.0 - self.h("beta2")?) as f32,
                wd: self.h("weight_decay")? as f32,
            },
            Opt::Sgd => Scalars::Sgd {
                lr: self.h("lr")? as f32,
                wd: self.h("weight_decay")? as f32,
                momentum: self.h("momentum")? as f32,
                one_m_damp: (1.0 - self.h("dampening")?) as f32,
                first: step == 1,
                nesterov: self.h("nesterov")? != 0.0,
            },
            Opt::Adagrad => Scalars::Adagrad {
                clr: (self.h("lr")? / (1.0 + (t - 1.0) * self.h("lr_decay")?)) as f32,
                wd: self.h("weight_decay")? as f32,
                eps: self.h("eps")? as f32,
            },
            Opt::Rmsprop => Scalars::Rmsprop {
                lr: self.h("lr")? as f32,
                wd: self.h("weight_decay")? as f32,
                one_m_alpha: (1.0 - self.h("alpha")?) as f32,
                eps: self.h("eps")? as f32,
                momentum: self.h("momentum")? as f32,
                centered: self.h("centered")? != 0.0,
            },
        })
    }

    /// One step: `params[i]` is updated in place from `grads[i]`.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<(), String> {
        if params.len() != self.states.len() || grads.len() != self.states.len() {
            return Err(format!("expected {} parameters and gradients", self.states.len()));
        }
        for ((p, g), s) in params.iter().zip(grads).zip(&self.states) {
            if p.len() != g.len() || s.iter().any(|(s, off)| s.len() - off != p.len()) {
                return Err("a parameter, its gradient and its state differ in length".into());
            }
        }
        let sc = self.scalars(self.step + 1)?;
        self.step += 1;
        let mut chunks = Vec::new();
        for ((p, g), states) in params.iter_mut().zip(grads).zip(self.states.iter_mut()) {
            let n = p.len();
            let mut its: Vec<_> = states.iter_mut().map(|(s, off)| s[*off..*off + n].chunks_mut(CHUNK)).collect();
            for (p, g) in p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)) {
                let mut s: [&mut [f32]; 3] = Default::default();
                for (slot, it) in s.iter_mut().zip(its.iter_mut()) {
                    *slot = it.next().unwrap_or_default();
                }
                chunks.push(Chunk { p, g, s });
            }
        }
        self.pool.install(|| chunks.into_par_iter().for_each(|c| kernel(sc, c)));
        Ok(())
    }

    /// State `name` of parameter `i`.
    pub fn state(&self, i: usize, name: &str) -> Option<&[f32]> {
        let k = self.opt.states().iter().position(|s| *s == name)?;
        let (data, off) = self.states.get(i)?.get(k)?;
        Some(&data[*off..])
    }
}

/// A state buffer of `n` values starting `skew` cache-line groups into its allocation, as
/// gdc's runtime lays out its own: large allocations all start at the same offset within a
/// page, and unskewed streams share cache sets and trip 4K-aliasing stalls, which would make
/// this "limit" slower than it has to be.
fn skewed(init: f32, n: usize, skew: usize) -> (Vec<f32>, usize) {
    let off = (skew % 13) * 5 * 16 + 16;
    (vec![init; n + off], off)
}

#[inline(always)]
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The fused loop of one chunk. Branches on host scalars are outside the loops.
fn kernel(sc: Scalars, c: Chunk) {
    let Chunk { p, g, s: [s0, s1, s2] } = c;
    match sc {
        Scalars::AdamW { decay, one_m_b1, one_m_b2, bc1, bc2, lr, eps } => {
            for (((p, g), m), v) in p.iter_mut().zip(g).zip(s0.iter_mut()).zip(s1.iter_mut()) {
                let m1 = *m + one_m_b1 * (*g - *m);
                let v1 = *v + one_m_b2 * (*g * *g - *v);
                *p = *p * decay - lr * (m1 / bc1) / ((v1 / bc2).sqrt() + eps);
                *m = m1;
                *v = v1;
            }
        }
        Scalars::Lion { lr, one_m_b1, one_m_b2, wd } => {
            for ((p, g), m) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                let u = sign(*m + one_m_b1 * (*g - *m));
                *m += one_m_b2 * (*g - *m);
                *p -= lr * (u + wd * *p);
            }
        }
        Scalars::Sgd { lr, wd, momentum, one_m_damp, first, nesterov } => {
            if momentum == 0.0 {
                for (p, g) in p.iter_mut().zip(g) {
                    *p -= lr * (*g + wd * *p);
                }
            } else {
                for ((p, g), b) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    let d = *g + wd * *p;
                    let b1 = if first { d } else { momentum * *b + one_m_damp * d };
                    let step = if nesterov { d + momentum * b1 } else { b1 };
                    *b = b1;
                    *p -= lr * step;
                }
            }
        }
        Scalars::Adagrad { clr, wd, eps } => {
            for ((p, g), s) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                let d = *g + wd * *p;
                let s1 = *s + d * d;
                *s = s1;
                *p -= clr * d / (s1.sqrt() + eps);
            }
        }
        Scalars::Rmsprop { lr, wd, one_m_alpha, eps, momentum, centered } => {
            let it = p.iter_mut().zip(g).zip(s0.iter_mut());
            match (centered, momentum > 0.0) {
                (true, true) => {
                    for ((((p, g), sq), ga), b) in it.zip(s1.iter_mut()).zip(s2.iter_mut()) {
                        let d = *g + wd * *p;
                        let sq1 = *sq + one_m_alpha * (d * d - *sq);
                        let ga1 = *ga + one_m_alpha * (d - *ga);
                        let avg = (sq1 - ga1 * ga1).sqrt() + eps;
                        let b1 = momentum * *b + d / avg;
                        *sq = sq1;
                        *ga = ga1;
                        *b = b1;
                        *p -= lr * b1;
                    }
                }
                (true, false) => {
                    for (((p, g), sq), ga) in it.zip(s1.iter_mut()) {
                        let d = *g + wd * *p;
                        let sq1 = *sq + one_m_alpha * (d * d - *sq);
                        let ga1 = *ga + one_m_alpha * (d - *ga);
                        *sq = sq1;
                        *ga = ga1;
                        *p -= lr * d / ((sq1 - ga1 * ga1).sqrt() + eps);
                    }
                }
                (false, true) => {
                    for (((p, g), sq), b) in it.zip(s2.iter_mut()) {
                        let d = *g + wd * *p;
                        let sq1 = *sq + one_m_alpha * (d * d - *sq);
                        let b1 = momentum * *b + d / (sq1.sqrt() + eps);
                        *sq = sq1;
                        *b = b1;
                        *p -= lr * b1;
                    }
                }
                (false, false) => {
                    for ((p, g), sq) in it {
                        let d = *g + wd * *p;
                        let sq1 = *sq + one_m_alpha * (d * d - *sq);
                        *sq = sq1;
                        *p -= lr * d / (sq1.sqrt() + eps);
                    }
                }
            }
        }
    }
}

/// `examples/optimizers/NAME.gd` in this workspace.
pub fn example_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers").join(format!("{name}.gd"))
}

/// The source of `examples/optimizers/NAME.gd`, with the files it `use`s inlined (a composed
/// example, such as `adamw_ema = weight_ema(adamw)`, compiles from it).
pub fn example_source(name: &str) -> Result<String, String> {
    gdc_dsl::policy::load(&example_path(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdc_runtime::bench::fill_uniform;
    use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program};

    const SHAPES: [&[usize]; 4] = [&[9, 7], &[40_000], &[5], &[]];

    #[test]
    fn a_composed_example_compiles_from_its_source() {
        let src = example_source("adamw_ema").expect("readable");
        let program = Program::compile(&src).expect("adamw_ema.gd (weight_ema(adamw)) compiles with its uses");
        assert_eq!(program.name(), "adamw_ema");
        assert!(example_source("no_such_optimizer").is_err());
    }

    /// Within 1e-5 relative, where an element that cancels to near zero is taken relative to
    /// 1% of the buffer's largest magnitude: it carries the float32 rounding of its terms
    /// (`buf = 0.9 * buf + d` with terms near 1 and a result near 0.005), not of itself.
    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        let floor = 0.01 * want.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(floor), "{what}[{i}]: hand-fused {a}, interpreter {b}");
        }
    }

    /// Three steps of the hand loop and of gdc's interpreter from the same values, on
    /// parameters that span several chunks; parameters and every state agree to 1e-5
    /// relative.
    fn check(opt: Opt, hypers: &[(&str, f64)]) {
        let program = Program::compile(&opt.source().expect("source")).expect("compiles");
        let specs: Vec<ParamSpec> =
            SHAPES.iter().enumerate().map(|(i, s)| ParamSpec::new(format!("w{i}"), s)).collect();
        let options = Options { backend: Backend::Interp, threads: Some(1) };
        let mut gdc = Optimizer::with_options(&program, &specs, options).expect("binds");
        for (name, value) in hypers {
            gdc.set_hyper(name, *value).expect("hyper");
        }
        let numels: Vec<usize> = specs.iter().map(ParamSpec::numel).collect();
        let mut hand =
            Hand::new(opt, &numels, &gdc.hypers().into_iter().map(|(n, _, v)| (n, v)).collect::<Vec<_>>(), 2)
                .expect("hand loop");
        let mut seed = 11;
        let mut a: Vec<Vec<f32>> = numels.iter().map(|&n| fill_uniform(&mut seed, n, 1.0)).collect();
        let mut b = a.clone();
        for _ in 0..3 {
            let grads: Vec<Vec<f32>> = numels.iter().map(|&n| fill_uniform(&mut seed, n, 1.0)).collect();
            let gv: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
            gdc.step(&mut a.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(), &gv).expect("gdc step");
            hand.step(&mut b.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(), &gv).expect("hand step");
        }
        for (i, spec) in specs.iter().enumerate() {
            assert_close(&format!("{} {hypers:?} {}", opt.name(), spec.name), &b[i], &a[i]);
            for s in opt.states() {
                let want = gdc.state(&spec.name, s).expect("gdc state");
                assert_close(&format!("{} {hypers:?} {}.{s}", opt.name(), spec.name), hand.state(i, s).unwrap(), &want);
            }
        }
        let initial = fill_uniform(&mut 11, numels.iter().sum(), 1.0);
        let moved = a.iter().flatten().zip(&initial).filter(|(x, y)| x != y).count();
        assert!(moved > initial.len() / 2, "{}: only {moved} of {} elements moved", opt.name(), initial.len());
    }

    #[test]
    fn adamw_matches_the_interpreter() {
        check(Opt::AdamW, &[]);
        check(Opt::AdamW, &[("weight_decay", 0.1), ("lr", 0.01)]);
    }

    #[test]
    fn lion_matches_the_interpreter() {
        check(Opt::Lion, &[]);
    }

    #[test]
    fn sgd_matches_the_interpreter() {
        check(Opt::Sgd, Opt::Sgd.bench_hypers());
        check(Opt::Sgd, &[]);
        check(Opt::Sgd, &[("momentum", 0.9), ("nesterov", 1.0), ("dampening", 0.1), ("weight_decay", 0.01)]);
    }

    #[test]
    fn adagrad_matches_the_interpreter() {
        check(Opt::Adagrad, &[]);
        check(Opt::Adagrad, &[("lr_decay", 0.1), ("weight_decay", 0.01), ("initial_accumulator_value", 0.1)]);
    }

    #[test]
    fn rmsprop_matches_the_interpreter() {
        check(Opt::Rmsprop, Opt::Rmsprop.bench_hypers());
        check(Opt::Rmsprop, &[]);
        check(Opt::Rmsprop, &[("centered", 1.0)]);
        check(Opt::Rmsprop, &[("momentum", 0.5), ("weight_decay", 0.01)]);
    }

    #[test]
    fn names_round_trip() {
        for o in Opt::ALL {
            assert_eq!(Opt::parse(o.name()), Some(o));
        }
        assert_eq!(Opt::parse("adam"), None);
    }
}
