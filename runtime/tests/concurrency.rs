//! Optimizers across threads: `Optimizer` and `Program` are `Send` and `Sync` (checked at
//! compile time below), and independent optimizers (different programs, shapes and
//! gradients, two of them sharing one `Program`) stepped at the same time on their own
//! threads end with bit-identical parameters and state to the same optimizers stepped one
//! after another: each CPU optimizer owns its worker pool, buffers and counters, and shares
//! only the immutable compiled program.

use gdc_runtime::checkpoint::{self, StateTensor};
use gdc_runtime::{Optimizer, Options, ParamSpec, Program};
use std::path::{Path, PathBuf};

// Moving an optimizer to another thread (a data-loader or pipeline stage owning it), sharing
// `&Optimizer` (reading state, saving a checkpoint) and sharing one compiled `Program`.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<Optimizer>();
    sync::<Optimizer>();
    send::<Program>();
    sync::<Program>();
};

const STEPS: usize = 12;

/// One optimizer's setup: which program, its parameters, the gradients' seed.
struct Case {
    name: &'static str,
    program: Program,
    params: Vec<ParamSpec>,
    seed: f32,
}

fn cases() -> Vec<Case> {
    let compile = |src: &str| Program::compile(src).expect("compiles");
    let adamw = compile(include_str!("../../examples/optimizers/adamw.gd"));
    let case = |name, program: &Program, params: &[(&str, &[usize])], seed| Case {
        name,
        program: program.clone(),
        params: params.iter().map(|(n, s)| ParamSpec::new(*n, s)).collect(),
        seed,
    };
    vec![
        case("adamw-a", &adamw, &[("w", &[300, 229]), ("b", &[229])], 0.31),
        // The same Program, shared with another thread's optimizer.
        case("adamw-b", &adamw, &[("emb", &[50_000]), ("w", &[17, 5])], 0.77),
        case(
            "muon",
            &compile(include_str!("../../examples/optimizers/muon.gd")),
            &[("w", &[96, 64]), ("qkv", &[3, 32, 48])],
            0.13,
        ),
        case(
            "soap",
            &compile(include_str!("../../examples/optimizers/soap.gd")),
            &[("w", &[40, 24]), ("b", &[24])],
            0.59,
        ),
        case(
            "lion",
            &compile(include_str!("../../examples/optimizers/lion.gd")),
            &[("w", &[70_000]), ("b", &[3])],
            0.97,
        ),
    ]
}

/// What an optimizer ends with: every parameter's bits, and every state tensor's (from its
/// checkpoint, which also holds the step count).
type Outcome = (Vec<Vec<u32>>, u64, Vec<(String, Vec<u32>)>);

fn bind(case: &Case) -> Optimizer {
    let options = Options { threads: Some(2), ..Options::default() };
    Optimizer::with_options(&case.program, &case.params, options).expect("binds")
}

fn initial(case: &Case) -> Vec<Vec<f32>> {
    let values = |k: usize, p: &ParamSpec| (0..p.numel()).map(|i| ((i * 7 + k) as f32 * case.seed).sin()).collect();
    case.params.iter().enumerate().map(|(k, p)| values(k, p)).collect()
}

/// Steps `opt` STEPS times with gradients from the case's seed and saves it to `file`.
fn run(mut opt: Optimizer, case: &Case, file: &Path) -> Outcome {
    let mut params = initial(case);
    for t in 0..STEPS {
        let grads: Vec<Vec<f32>> = params
            .iter()
            .map(|p| p.iter().enumerate().map(|(i, x)| x * 0.5 + ((i + 3 * t) as f32 * case.seed).cos()).collect())
            .collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &grads).expect("steps");
    }
    opt.save_checkpoint(file).expect("saves");
    let (meta, tensors) = checkpoint::load(file).expect("loads");
    let state = tensors.iter().map(|t: &StateTensor| (t.key(), t.data.iter().map(|x| x.to_bits()).collect())).collect();
    (params.iter().map(|p| p.iter().map(|x| x.to_bits()).collect()).collect(), meta.step, state)
}

#[test]
fn optimizers_stepped_in_parallel_threads_match_the_same_stepped_one_by_one() {
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("concurrency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let cases = cases();
    let sequential: Vec<Outcome> =
        cases.iter().map(|c| run(bind(c), c, &dir.join(format!("{}-seq.safetensors", c.name)))).collect();
    // Bound here, stepped on their own threads, all at once.
    let optimizers: Vec<Optimizer> = cases.iter().map(bind).collect();
    let parallel: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = optimizers
            .into_iter()
            .zip(&cases)
            .map(|(opt, c)| {
                let file = dir.join(format!("{}-par.safetensors", c.name));
                s.spawn(move || run(opt, c, &file))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a stepping thread panicked")).collect()
    });
    for ((c, seq), par) in cases.iter().zip(&sequential).zip(&parallel) {
        assert_eq!(seq.1, STEPS as u64, "{}", c.name);
        assert!(!seq.2.is_empty(), "{}: no state saved", c.name);
        assert_eq!(seq.0, par.0, "{}: parameters differ between sequential and parallel runs", c.name);
        assert_eq!(seq.1, par.1, "{}", c.name);
        assert_eq!(seq.2, par.2, "{}: state differs between sequential and parallel runs", c.name);
        // The runs did something: every parameter moved.
        for (k, (after, before)) in seq.0.iter().zip(initial(c)).enumerate() {
            let moved = after.iter().zip(&before).filter(|(a, b)| **a != b.to_bits()).count();
            assert!(moved > 0, "{}: parameter {k} never moved", c.name);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
