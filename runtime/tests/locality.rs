//! `Program::elementwise`: a parameter the program steps elementwise gives, stepped as
//! shards of its leading dimension (as distributed training steps local shards), exactly
//! the elements of the whole parameter's step, bit for bit, for every example optimizer that
//! claims it; and the optimizers whose updates read the whole parameter (norms, factored
//! statistics, matrix products, muP's width) do not claim it.

use gdc_runtime::verify::noise_f32;
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program, Role};
use std::path::PathBuf;

fn example(name: &str) -> Program {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers").join(format!("{name}.gd"));
    Program::compile_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn cpu() -> Options {
    Options { backend: Backend::Cpu, threads: Some(2) }
}

/// The leading-dimension shards of `shape` at `world` ranks as torch.chunk cuts them:
/// `ceil(rows / world)` rows each, the last ones short or empty.
fn shards(shape: &[usize], world: usize) -> Vec<Vec<usize>> {
    let rows = shape[0];
    let chunk = rows.div_ceil(world);
    (0..world)
        .map(|r| {
            let mut s = shape.to_vec();
            s[0] = rows.saturating_sub(r * chunk).min(chunk);
            s
        })
        .collect()
}

/// Steps `spec` whole and as shards at `world` ranks (empty shards skipped) for five steps
/// from the same values and gradients; true when every element agrees bit for bit.
fn sharded_equals_whole(program: &Program, spec: &ParamSpec, world: usize) -> bool {
    let numel: usize = spec.shape.iter().product();
    let mut whole = Optimizer::with_options(program, std::slice::from_ref(spec), cpu()).expect("binds whole");
    let mut p_whole = noise_f32(1, numel);
    let mut p_shards = p_whole.clone();
    let parts: Vec<(usize, Vec<usize>)> = shards(&spec.shape, world)
        .into_iter()
        .scan(0usize, |at, s| {
            let start = *at;
            *at += s.iter().product::<usize>();
            Some((start, s))
        })
        .filter(|(_, s)| s[0] > 0)
        .collect();
    let mut sharded: Vec<Optimizer> = parts
        .iter()
        .map(|(_, s)| {
            let part = ParamSpec { shape: s.clone(), ..spec.clone() };
            Optimizer::with_options(program, &[part], cpu()).expect("binds a shard")
        })
        .collect();
    for step in 0..5u64 {
        let g = noise_f32(100 + step, numel);
        whole.step(&mut [&mut p_whole], &[&g]).expect("steps whole");
        for ((start, s), opt) in parts.iter().zip(&mut sharded) {
            let n: usize = s.iter().product();
            let range = *start..*start + n;
            opt.step(&mut [&mut p_shards[range.clone()]], &[&g[range]]).expect("steps a shard");
        }
    }
    p_whole.iter().zip(&p_shards).all(|(a, b)| a.to_bits() == b.to_bits())
}

#[test]
fn elementwise_optimizers_step_shards_exactly_as_the_whole() {
    let claims = [
        ("adamw", Role::Other, vec![7, 5], true),
        ("adamw", Role::Bias, vec![7], true),
        ("adamw", Role::Other, vec![3, 4, 5], true),
        ("lion", Role::Other, vec![7, 5], true),
        ("sgd", Role::Other, vec![7, 5], true),
        ("adam", Role::Other, vec![9], true),
        ("rmsprop", Role::Other, vec![7, 5], true),
        ("schedule_free_adamw", Role::Other, vec![7, 5], true),
        // A whole-parameter norm, factored statistics, a global norm, Newton-Schulz.
        ("lamb", Role::Other, vec![7, 5], false),
        ("adafactor", Role::Other, vec![7, 5], false),
        ("adamw_clip_cosine", Role::Other, vec![7, 5], false),
        ("muon", Role::Other, vec![7, 5], false),
        ("shampoo", Role::Other, vec![7, 5], false),
        ("soap", Role::Other, vec![7, 5], false),
        // A policy: Muon for hidden matrices, AdamW for the rest.
        ("muon_adamw", Role::Hidden, vec![7, 5], false),
        ("muon_adamw", Role::Bias, vec![7], true),
    ];
    for (name, role, shape, want) in claims {
        let program = example(name);
        let spec = ParamSpec::new("w", &shape).with_role(role);
        let got = program.elementwise(&spec).expect("routes");
        assert_eq!(got, want, "{name} on {shape:?} ({role:?}): elementwise {got}, expected {want}");
        if got {
            for world in [2, 3] {
                assert!(
                    sharded_equals_whole(&program, &spec, world),
                    "{name} on {shape:?} claims elementwise but its {world} shards differ from the whole"
                );
            }
        }
    }
    // The claim is not vacuous: an optimizer that reads the whole parameter differs when
    // stepped by shards.
    let lamb = example("lamb");
    assert!(!sharded_equals_whole(&lamb, &ParamSpec::new("w", &[7, 5]), 2), "lamb's shards would agree");
}

#[test]
fn every_elementwise_claim_of_the_examples_holds_on_shards() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/optimizers");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples")
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(String::from))
        .collect();
    names.sort();
    let mut claimed = 0;
    for name in &names {
        let program = example(name);
        for (shape, role) in [(vec![7usize, 5], Role::Hidden), (vec![7], Role::Bias), (vec![4, 3, 2], Role::Other)] {
            let spec = ParamSpec::new("w", &shape).with_role(role);
            let Ok(true) = program.elementwise(&spec) else { continue };
            claimed += 1;
            assert!(sharded_equals_whole(&program, &spec, 3), "{name} on {shape:?} claims elementwise, shards differ");
        }
    }
    assert!(claimed >= 10, "only {claimed} elementwise claims among the examples");
}
