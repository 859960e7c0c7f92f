//! `Program::locality`: a parameter the program steps elementwise gives, stepped as
//! shards of its leading dimension (as distributed training steps local shards), exactly
//! the elements of the whole parameter's step, bit for bit, for every example optimizer that
//! claims it; the reducing ones (norms, global norms, Adafactor's factored statistics) give
//! it with their partials combined across the shards; and the optimizers whose updates
//! multiply matrices do neither.

use gdc_runtime::verify::noise_f32;
use gdc_runtime::{Backend, Locality, Optimizer, Options, ParamSpec, Program, Role};
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
            let part = ParamSpec { shape: s.clone(), ..spec.clone() }.as_shard(spec.shape[0]);
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
        let got = program.locality(&spec).expect("routes") == Locality::Elementwise;
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
            let Ok(Locality::Elementwise) = program.locality(&spec) else { continue };
            claimed += 1;
            assert!(sharded_equals_whole(&program, &spec, 3), "{name} on {shape:?} claims elementwise, shards differ");
        }
    }
    assert!(claimed >= 10, "only {claimed} elementwise claims among the examples");
}

/// Steps `specs` whole in one optimizer and as `world` ranks' shards (each rank one
/// optimizer of every parameter's shard, some empty, on its own thread) whose reducing
/// kernels combine their partials through a barrier, as an all-reduce would; returns the
/// largest relative difference between the two after five steps.
fn combined_shards_vs_whole(program: &Program, specs: &[ParamSpec], world: usize) -> f64 {
    use std::sync::{Barrier, Mutex};
    let numels: Vec<usize> = specs.iter().map(ParamSpec::numel).collect();
    let mut whole = Optimizer::with_options(program, specs, cpu()).expect("binds whole");
    let mut p_whole: Vec<Vec<f32>> = numels.iter().enumerate().map(|(i, n)| noise_f32(1 + i as u64, *n)).collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..5u64)
        .map(|step| numels.iter().enumerate().map(|(i, n)| noise_f32(100 + 10 * step + i as u64, *n)).collect())
        .collect();
    let start = p_whole.clone();
    for g in &grads {
        let mut ps: Vec<&mut [f32]> = p_whole.iter_mut().map(|p| &mut p[..]).collect();
        let gs: Vec<&[f32]> = g.iter().map(|g| &g[..]).collect();
        whole.step(&mut ps, &gs).expect("steps whole");
    }
    // Each rank's element range of each parameter.
    let ranges: Vec<Vec<std::ops::Range<usize>>> = (0..world)
        .map(|r| {
            specs
                .iter()
                .map(|s| {
                    let rest: usize = s.shape[1..].iter().product();
                    let chunk = s.shape[0].div_ceil(world);
                    let lo = (r * chunk).min(s.shape[0]);
                    let hi = ((r + 1) * chunk).min(s.shape[0]);
                    lo * rest..hi * rest
                })
                .collect()
        })
        .collect();
    let deposits = Mutex::new(vec![Vec::<f64>::new(); world]);
    let barrier = Barrier::new(world);
    let shards: Vec<Vec<Vec<f32>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..world)
            .map(|r| {
                let (ranges, deposits, barrier, grads, start) = (&ranges[r], &deposits, &barrier, &grads, &start);
                scope.spawn(move || {
                    let local: Vec<ParamSpec> = specs
                        .iter()
                        .zip(ranges)
                        .map(|(s, range)| {
                            let rest: usize = s.shape[1..].iter().product();
                            let mut shape = s.shape.clone();
                            shape[0] = range.len() / rest.max(1);
                            ParamSpec { shape, ..s.clone() }.as_shard(s.shape[0])
                        })
                        .collect();
                    let mut opt = Optimizer::with_options(program, &local, cpu()).expect("binds shards");
                    let mut ps: Vec<Vec<f32>> =
                        start.iter().zip(ranges).map(|(p, rg)| p[rg.clone()].to_vec()).collect();
                    let mut combine = |parts: &mut [gdc_runtime::Partial]| {
                        deposits.lock().unwrap()[r] = parts.iter().map(|p| p.value).collect();
                        barrier.wait();
                        {
                            let all = deposits.lock().unwrap();
                            for (k, p) in parts.iter_mut().enumerate() {
                                let values = all.iter().map(|d| d[k]);
                                p.value = match p.kind {
                                    gdc_runtime::ReduceKind::Sum => values.sum(),
                                    gdc_runtime::ReduceKind::MaxAbs => values.fold(0.0, f64::max),
                                    gdc_runtime::ReduceKind::Max => values.fold(f64::NEG_INFINITY, f64::max),
                                };
                            }
                        }
                        barrier.wait();
                        Ok(())
                    };
                    for g in grads {
                        let gl: Vec<&[f32]> = g.iter().zip(ranges).map(|(g, rg)| &g[rg.clone()]).collect();
                        let mut pl: Vec<&mut [f32]> = ps.iter_mut().map(|p| &mut p[..]).collect();
                        opt.step_combined(&mut pl, &gl, &mut combine).expect("steps shards");
                    }
                    ps
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("rank")).collect()
    });
    let mut worst = 0.0f64;
    for (r, rank) in shards.iter().enumerate() {
        for (i, part) in rank.iter().enumerate() {
            for (a, b) in part.iter().zip(&p_whole[i][ranges[r][i].clone()]) {
                let scale = f64::from(b.abs()).max(1e-6);
                worst = worst.max((f64::from(*a) - f64::from(*b)).abs() / scale);
            }
        }
    }
    // The step moved the parameters, so agreeing is not agreeing on nothing.
    assert!(p_whole.iter().zip(&start).any(|(p, s)| p != s), "nothing moved");
    worst
}

#[test]
fn reducing_optimizers_step_shards_with_combined_partials_as_the_whole() {
    let claims = [
        ("lamb", Locality::Reduces),
        ("adamw_clip_cosine", Locality::Reduces),
        ("adamw", Locality::Elementwise),
        // Row statistics within the shard, column ones combined, RMS over the whole.
        ("adafactor", Locality::Reduces),
        ("muon", Locality::Whole),
        ("shampoo", Locality::Whole),
        ("soap", Locality::Whole),
    ];
    // Shards of 7 rows at 3 ranks: 3, 3 and 1; of 2 rows: 1, 1 and an empty one.
    let specs = [ParamSpec::new("w", &[7, 5]), ParamSpec::new("b", &[2, 3]), ParamSpec::new("c", &[9])];
    for (name, want) in claims {
        let program = example(name);
        // Muon, Shampoo and SOAP update matrices only.
        let specs = if want == Locality::Whole { &specs[..2] } else { &specs[..] };
        for spec in specs {
            let got = program.locality(spec).expect("routes");
            assert_eq!(got, want, "{name} on {:?}", spec.shape);
        }
        if want == Locality::Whole {
            let mut opt = Optimizer::with_options(&program, specs, cpu()).expect("binds");
            let e = opt.step_combined(&mut [], &[], &mut |_| Ok(())).expect_err("refuses");
            assert!(e.to_string().contains("only whole"), "{name}: {e}");
            continue;
        }
        for world in [1, 2, 3] {
            let worst = combined_shards_vs_whole(&program, specs, world);
            assert!(worst < 1e-6, "{name} at {world} ranks: shards differ from the whole by {worst:e}");
        }
    }
    // Without combining, LAMB's shards are another algorithm (the claim is not vacuous).
    let lamb = example("lamb");
    assert!(!sharded_equals_whole(&lamb, &ParamSpec::new("w", &[7, 5]), 2), "lamb's shards would agree");
}

/// A policy clipped in front of its routes (`part clip_grad_norm`) folds one norm over the
/// parameters of every route: stepped by reducing shards, every route's partials combine
/// into it across ranks, in the same calls on every rank, as the whole step does.
#[test]
fn a_clipped_policy_steps_shards_with_one_norm_over_every_route() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dir = std::env::temp_dir().join(format!("gdc-clipped-policy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("optimizers")).expect("temp dir");
    std::fs::create_dir_all(dir.join("parts")).expect("temp dir");
    for f in ["optimizers/adamw.gd", "optimizers/lion.gd", "parts/transforms.gd"] {
        std::fs::copy(examples.join(f), dir.join(f)).expect("copy");
    }
    let policy = "use \"../parts/transforms.gd\"\nuse \"adamw.gd\"\nuse \"lion.gd\"\n\
                  policy clipped {\n  part clip_grad_norm\n  hidden -> lion\n  _ -> adamw\n}\n";
    std::fs::write(dir.join("optimizers/clipped.gd"), policy).expect("write");
    let program = Program::compile_file(dir.join("optimizers/clipped.gd")).expect("compiles");
    let specs = [
        ParamSpec::new("w", &[7, 5]).with_role(Role::Hidden),
        ParamSpec::new("b", &[2, 3]),
        ParamSpec::new("c", &[9]).with_role(Role::Hidden),
    ];
    for spec in &specs {
        assert_eq!(program.locality(spec).expect("routes"), Locality::Reduces, "{:?}", spec.shape);
    }
    for world in [1, 2, 3] {
        let worst = combined_shards_vs_whole(&program, &specs, world);
        assert!(worst < 1e-6, "at {world} ranks: shards differ from the whole by {worst:e}");
    }
}
