//! The CPU's LLVM tier computes exactly what Cranelift computes: for every example optimizer,
//! an artifact carrying the tier's code (built here, for both x86-64 levels, each loaded once
//! by the build) steps bit for bit like the program compiled from source, on awkward shapes
//! (one element, lengths off the vector widths, several 64K chunks, matrices, rank 3), random
//! data, and random hyperparameters (every flag on and off, so every loop version runs).
//! Runs the best level this CPU has; prints why it skipped where it has none. Kernel by
//! kernel, the float64 partial reductions are compared too: stepping rounds them to float32
//! scalars, which would hide a different order of summation.

#![allow(unsafe_code)]

use gdc_compiler::artifact::{Artifact, Target};
use gdc_compiler::cpu::abi::Mode;
use gdc_compiler::cpu::native::Level;
use gdc_runtime::verify::trajectory;
use gdc_runtime::{Backend, Options, ParamSpec, Program};
use gdc_tests::{source, OPTIMIZERS};

fn shapes(name: &str, matrix_only: bool) -> Vec<Vec<usize>> {
    let small = matches!(name, "shampoo" | "grafted_shampoo" | "soap" | "kfac");
    let mut s = vec![vec![5, 7], vec![1, 1]];
    if !small {
        s.push(vec![37, 129]);
    }
    if !matrix_only {
        s.extend([vec![1], vec![13], vec![1023]]);
        if !small {
            s.push(vec![2 * 65536 + 29]);
            s.push(vec![3, 2, 5]);
        }
    }
    s
}

/// The best level this CPU runs, or `None` after saying why the test skips.
fn level_here() -> Option<Level> {
    let level = Level::best_available();
    if level.is_none() {
        println!("skipped: this CPU has neither x86-64-v3 (AVX2) nor x86-64-v4, so no native kernel runs here");
    }
    level
}

#[test]
fn native_kernels_step_bit_for_bit_like_cranelift() {
    let Some(level) = level_here() else { return };
    let mut native_items = 0;
    let mut failures = Vec::new();
    for entry in OPTIMIZERS {
        let src = source(entry.name);
        let mut artifact = Artifact::build(&src, entry.name, Target::Cpu).expect("builds");
        let compiled = artifact.validate().expect("validates");
        artifact.native = gdc_compiler::cpu::llvm::compile(&compiled.plan).expect("the LLVM tier compiles");
        let native = Program::from_artifact(artifact).expect("loads");
        let cranelift = Program::compile(&src).expect("compiles");
        assert_eq!(cranelift.native(), None);
        let Some((got_level, items)) = native.native() else {
            panic!("{}: the artifact's native kernels are not used", entry.name);
        };
        assert_eq!(got_level, level, "{}: the best level this CPU has runs", entry.name);
        native_items += items;
        let specs: Vec<ParamSpec> = shapes(entry.name, entry.matrix_only)
            .iter()
            .enumerate()
            .map(|(i, s)| ParamSpec::new(format!("p{i}"), s))
            .collect();
        for seed in [1u64, 4, 5, 6, 7] {
            let options = Options { backend: Backend::Cpu, threads: Some(2) };
            let want = trajectory(&cranelift, &specs, options, seed, 3).expect("Cranelift steps");
            let got = trajectory(&native, &specs, options, seed, 3).expect("the native kernels step");
            'steps: for (t, (w, g)) in want.iter().zip(&got).enumerate() {
                for (p, (a, b)) in w.iter().zip(g).enumerate() {
                    if let Some(i) =
                        a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
                    {
                        failures.push(format!(
                            "{} seed {seed} step {}: {}[{i}] is {} natively, {} on Cranelift",
                            entry.name,
                            t + 1,
                            specs[p].name,
                            b[i],
                            a[i]
                        ));
                        break 'steps;
                    }
                }
            }
        }
        println!("{:20} {} of its kernel items native ({})", entry.name, items, level.name());
    }
    assert!(native_items > 0, "no kernel ran natively");
    assert!(failures.is_empty(), "{} differences, first: {:?}", failures.len(), &failures[..failures.len().min(10)]);
}

#[test]
fn native_kernels_match_cranelift_kernel_by_kernel_partial_reductions_included() {
    let Some(level) = level_here() else { return };
    let mut compared = 0;
    let mut with_reductions = 0;
    let mut failures = Vec::new();
    for entry in OPTIMIZERS {
        let compiled = gdc_tests::compile(entry.name);
        let native = gdc_compiler::cpu::llvm::compile(&compiled.plan).expect("the LLVM tier compiles");
        let cranelift = gdc_compiler::cpu::compile(&compiled.plan).expect("Cranelift compiles");
        let mixed = gdc_compiler::cpu::compile_with(&compiled.plan, &native).expect("loads");
        assert_eq!(mixed.native.map(|(l, _)| l), Some(level));
        for ((ci, cu), (ni, nu)) in cranelift.variants.iter().zip(&mixed.variants) {
            for (item, (c, n)) in ci.iter().chain(cu).zip(ni.iter().chain(nu)).enumerate() {
                let (Some(c), Some(n)) = (c, n) else { continue };
                if c.abi.mode != Mode::Flat || c.entry as usize == n.entry as usize {
                    continue;
                }
                compared += 1;
                with_reductions += usize::from(!c.abi.reductions.is_empty());
                // Ranges: one element, off the vector widths, unaligned starts, long.
                for (seed, (start, end)) in
                    [(0usize, 1usize), (3, 1011), (0, 1024), (7, 4116), (1, 40001)].into_iter().enumerate()
                {
                    let seed = seed as u64 + 17 * item as u64;
                    let len = end + 16;
                    let bufs: Vec<Vec<f32>> = (0..c.abi.buffers.len())
                        .map(|b| gdc_runtime::verify::noise_f32(seed * 101 + b as u64, len))
                        .collect();
                    // Scalars in (-1, 1), a third of them exactly 0 (flags off, guards false).
                    let scalars: Vec<f32> = gdc_runtime::verify::noise_f32(seed * 7 + 3, c.abi.scalars.len().max(1))
                        .iter()
                        .enumerate()
                        .flat_map(|(i, x)| [if (i as u64 + seed).is_multiple_of(3) { 0.0 } else { *x }; 4])
                        .collect();
                    let run = |k: &gdc_compiler::cpu::CompiledKernel| {
                        let mut b = bufs.clone();
                        let ptrs: Vec<*mut f32> = b.iter_mut().map(|v| v.as_mut_ptr()).collect();
                        let sizes = [len as u64, 0, 0];
                        let mut partials = vec![f64::from_bits(0x7FF0_DEAD_0000_0001); k.abi.reductions.len().max(1)];
                        // SAFETY: every buffer holds `len` elements, more than `end` (bf16
                        // buffers read half as many bytes); the scalars table holds four
                        // copies of each of the kernel's scalars; partials one slot per
                        // reduction: what the kernel's ABI asks for.
                        unsafe {
                            (k.entry)(
                                ptrs.as_ptr(),
                                scalars.as_ptr(),
                                sizes.as_ptr(),
                                start as u64,
                                end as u64,
                                partials.as_mut_ptr(),
                            )
                        };
                        (b, partials)
                    };
                    let (cb, cp) = run(c);
                    let (nb, np) = run(n);
                    let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
                    if let Some((b, i)) = cb
                        .iter()
                        .zip(&nb)
                        .enumerate()
                        .find_map(|(b, (x, y))| x.iter().zip(y).position(|(p, q)| !same(*p, *q)).map(|i| (b, i)))
                    {
                        failures.push(format!(
                            "{} item {item} range {start}..{end}: buffer {b} element {i}: {} natively, {} on Cranelift",
                            entry.name, nb[b][i], cb[b][i]
                        ));
                    }
                    if let Some(r) =
                        cp.iter().zip(&np).position(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
                    {
                        failures.push(format!(
                            "{} item {item} range {start}..{end}: partial {r} is {:e} natively, {:e} on Cranelift",
                            entry.name, np[r], cp[r]
                        ));
                    }
                }
            }
        }
    }
    println!("{compared} native kernels compared with Cranelift's, {with_reductions} of them with reductions");
    assert!(with_reductions > 5, "too few kernels with reductions compared");
    assert!(failures.is_empty(), "{} differences, first: {:?}", failures.len(), &failures[..failures.len().min(10)]);
}
