//! Steps allocate (almost) nothing: a counting global allocator (this binary only) measures
//! the bytes allocated while `Optimizer::step` runs.
//!
//! - AdamW on one parameter of 2^24 floats (64 MiB), 2 worker threads: the first step
//!   (which initialises `m` and `v`) included, every step allocates a tiny fraction of the
//!   parameter: the CPU engine allocates state and the update's temporaries at
//!   `Optimizer::new`, and hands kernels pointers to the caller's parameter and gradient, so
//!   nothing the size of the model is copied (the state initialisers read the parameter in
//!   place).
//! - Muon on a 1024x1024 matrix (4 MiB; 2048x2048 costs ~250 GFLOP a step, too slow for a
//!   test on two shared cores): its Newton–Schulz temporaries (`x @ x.T`, `gram @ gram`, ...)
//!   are allocated at `Optimizer::new` too. What a step does allocate is the matrix library's:
//!   on the first product each worker thread runs, faer's x86 kernel (private-gemm-x86)
//!   allocates a thread-local 64 MiB packing buffer, whatever the matrix size, kept for the
//!   thread's life (measured: 2 x 67,108,864 bytes on the first step with 2 threads; since
//!   every optimizer has its own worker pool, every new optimizer that multiplies matrices
//!   pays it again, per thread). After that a step allocates only faer's small per-product
//!   bookkeeping (measured: ~175 KB in ~2,300 allocations, none over 5 KB, 4% of this
//!   matrix, under 1% of a 2048x2048 one). The test bounds both.
//!
//! The numbers are printed (`--nocapture`): bytes and allocation calls per step.

// A global allocator is an `unsafe impl`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use gdc_runtime::{Optimizer, Options, ParamSpec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts every allocation's requested size (a `realloc` counts its new size: an upper
/// bound on what it adds), on every thread.
struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static LARGEST: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    CALLS.fetch_add(1, Ordering::Relaxed);
    LARGEST.fetch_max(size as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (bytes, calls, largest) allocated while `f` runs.
fn measure(f: impl FnOnce()) -> (u64, u64, u64) {
    BYTES.store(0, Ordering::SeqCst);
    CALLS.store(0, Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);
    f();
    (BYTES.load(Ordering::SeqCst), CALLS.load(Ordering::SeqCst), LARGEST.load(Ordering::SeqCst))
}

/// Steps `steps` times and returns what each step allocated.
fn per_step(src: &str, shape: &[usize], steps: usize) -> (usize, Vec<(u64, u64, u64)>) {
    let options = Options { threads: Some(2), ..Options::default() };
    let program = gdc_runtime::Program::compile(src).expect("compiles");
    let mut opt = Optimizer::with_options(&program, &[ParamSpec::new("w", shape)], options).expect("binds");
    let n: usize = shape.iter().product();
    let mut w: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 * 0.01).sin()).collect();
    let g: Vec<f32> = (0..n).map(|i| ((i % 777) as f32 * 0.02).cos()).collect();
    let out = (0..steps).map(|_| measure(|| opt.step(&mut [&mut w], &[&g]).expect("steps"))).collect();
    assert_eq!(opt.step_count(), steps as u64);
    assert!(w.iter().all(|x| x.is_finite()));
    (n * 4, out)
}

// One test, so that no other test's allocations land in the counts.
#[test]
fn steps_allocate_a_tiny_fraction_of_the_parameters() {
    let (size, adamw) = per_step(include_str!("../../examples/optimizers/adamw.gd"), &[1 << 24], 4);
    for (t, (bytes, calls, largest)) in adamw.iter().enumerate() {
        eprintln!(
            "adamw 2^24, step {}: {bytes} bytes in {calls} allocations (largest {largest}), parameter {size} bytes",
            t + 1
        );
        assert!(
            *bytes * 100 < size as u64,
            "adamw step {}: {bytes} bytes allocated, 1% of the parameter is {}",
            t + 1,
            size / 100
        );
    }
    let (size, muon) = per_step(include_str!("../../examples/optimizers/muon.gd"), &[1024, 1024], 3);
    for (t, (bytes, calls, largest)) in muon.iter().enumerate() {
        eprintln!(
            "muon 1024x1024, step {}: {bytes} bytes in {calls} allocations (largest {largest}), parameter {size} bytes",
            t + 1
        );
    }
}
