//! The cuda backend's contract on any machine: typed errors without GPU code or without a
//! GPU (never a panic), cuda artifacts loading and running on the CPU too; and, where a GPU
//! and a real cuda artifact (`GDC_TEST_CUDA_ARTIFACT=adamw.gdo`) are present, agreement with
//! the reference interpreter on host and device memory, and checkpoints through the device.

use gdc_compiler::artifact::{Artifact, Target};
use gdc_compiler::gpu::abi::{plan_kernels, GpuProgram};
use gdc_runtime::{Backend, Optimizer, Options, ParamSpec, Program, RuntimeError};

const ADAMW: &str = include_str!("../../examples/optimizers/adamw.gd");

fn options(backend: Backend) -> Options {
    Options { backend, threads: Some(2) }
}

/// A cuda artifact whose kernel table is the plan's but whose PTX only names the entry
/// points: enough to load and validate anywhere, refused by a real driver.
fn stub_cuda_artifact(source: &str) -> Artifact {
    let mut artifact = Artifact::build(source, "stub.gd", Target::Cuda).expect("compiles");
    let plan = gdc_compiler::compile(source).expect("compiles").plan;
    let kernels: Vec<_> = plan_kernels(&plan).expect("lays out").into_iter().map(|(meta, _)| meta).collect();
    let ptx = kernels.iter().map(|k| format!(".visible .entry {}(\n)\n{{\n\tret;\n}}\n", k.name)).collect();
    artifact.gpu = Some(GpuProgram { arch: "sm_80".into(), ptx, kernels });
    artifact
}

fn specs() -> Vec<ParamSpec> {
    vec![ParamSpec::new("w", &[37, 29]), ParamSpec::new("b", &[1001]), ParamSpec::new("s", &[1])]
}

fn noise(seed: u64, n: usize) -> Vec<f32> {
    gdc_runtime::verify::noise_f32(seed, n)
}

#[test]
fn an_optimizer_stays_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Optimizer>();
    check::<Program>();
}

#[test]
fn a_program_without_gpu_code_says_how_to_build_one() {
    let program = Program::compile(ADAMW).expect("compiles");
    assert!(program.gpu().is_none());
    let e = Optimizer::with_options(&program, &specs(), options(Backend::Cuda)).err().expect("no GPU code");
    if cfg!(feature = "cuda") {
        assert!(matches!(&e, RuntimeError::NoGpuCode(name) if name == "adamw"), "{e:?}");
        assert!(e.to_string().contains("gdc build FILE.gd --target cuda -o FILE.gdo"), "{e}");
    } else {
        assert!(matches!(e, RuntimeError::CudaNotBuilt), "{e:?}");
    }
}

#[test]
fn a_cuda_artifact_keeps_its_gpu_code_and_runs_on_the_cpu() {
    let artifact = stub_cuda_artifact(ADAMW);
    let hash = artifact.program_hash.clone();
    let program = Program::from_artifact(artifact.clone()).expect("validates");
    assert_eq!(program.gpu().map(|g| g.arch.as_str()), Some("sm_80"));
    assert_eq!(program.hash(), hash, "checkpoints tie to the cuda artifact's hash");
    assert_ne!(program.hash(), Program::compile(ADAMW).expect("compiles").hash());
    // Through a file too.
    let path = std::env::temp_dir().join(format!("gdc-runtime-cuda-{}.gdo", std::process::id()));
    artifact.write(&path).expect("writes");
    let loaded = Program::load(&path).expect("loads a cuda artifact");
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.gpu(), program.gpu());
    // The same steps as the program compiled from source, on the CPU.
    let specs = specs();
    let mut a = Optimizer::with_options(&program, &specs, options(Backend::Cpu)).expect("binds");
    let mut b = Optimizer::from_source(ADAMW, &specs).expect("binds");
    let mut pa: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(i as u64, s.numel())).collect();
    let mut pb = pa.clone();
    for t in 0..2 {
        let g: Vec<Vec<f32>> =
            specs.iter().enumerate().map(|(i, s)| noise(100 + t * 7 + i as u64, s.numel())).collect();
        let gv: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        a.step(&mut pa.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv).expect("steps");
        b.step(&mut pb.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv).expect("steps");
    }
    assert_eq!(pa, pb);
}

#[test]
fn a_stale_kernel_table_is_refused() {
    let mut artifact = stub_cuda_artifact(ADAMW);
    if let Some(gpu) = artifact.gpu.as_mut() {
        gpu.kernels.pop();
    }
    let e = Program::from_artifact(artifact).err().expect("stale");
    assert!(e.to_string().contains("gpu.kernels"), "{e}");
}

/// Binds the stub artifact to the cuda backend. Without a GPU that is `NoGpu` naming
/// libcuda; with one, the driver refuses the stub PTX. `Some(reason)`: no GPU here.
fn probe_gpu() -> Option<String> {
    let program = Program::from_artifact(stub_cuda_artifact(ADAMW)).expect("validates");
    match Optimizer::with_options(&program, &specs(), options(Backend::Cuda)) {
        Err(RuntimeError::NoGpu(msg)) => {
            assert!(msg.contains("libcuda"), "a NoGpu message names the driver library: {msg}");
            assert!(msg.contains("cpu"), "a NoGpu message points at the cpu backend: {msg}");
            Some(msg)
        }
        Err(RuntimeError::CudaNotBuilt) if !cfg!(feature = "cuda") => Some("built without `cuda`".into()),
        Err(RuntimeError::Cuda(msg)) if msg.contains("PTX") => None,
        Err(e) => panic!("binding the cuda backend: unexpected error {e:?}"),
        Ok(_) => panic!("the driver accepted a stub PTX without kernel bodies"),
    }
}

#[test]
fn without_a_gpu_the_cuda_backend_is_a_typed_error() {
    let Some(reason) = probe_gpu() else {
        println!("a GPU is present: the stub PTX was refused by the driver, as it should be");
        return;
    };
    println!("skipping GPU checks: {reason}");
    let e = RuntimeError::NoGpu(reason);
    assert!(e.to_string().starts_with("no usable NVIDIA GPU: "), "{e}");
}

/// Relative agreement within 1e-5 (plus a small absolute floor for values near zero).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs() + 1e-6, "{what}[{j}]: cuda {g}, interpreter {w}");
    }
}

/// The adamw cuda artifact of `GDC_TEST_CUDA_ARTIFACT` and its path, where a GPU is present;
/// otherwise `None`, having printed why the GPU checks are skipped.
fn gpu_artifact() -> Option<(Program, std::ffi::OsString)> {
    if let Some(reason) = probe_gpu() {
        println!("skipping GPU checks: {reason}");
        return None;
    }
    let Some(path) = std::env::var_os("GDC_TEST_CUDA_ARTIFACT").filter(|p| std::path::Path::new(p).exists()) else {
        println!(
            "skipping GPU checks: set GDC_TEST_CUDA_ARTIFACT to an adamw artifact built with \
             `gdc build examples/optimizers/adamw.gd --target cuda -o adamw.gdo`"
        );
        return None;
    };
    Some((Program::load(&path).expect("loads the cuda artifact"), path))
}

#[test]
fn on_a_gpu_a_cuda_artifact_agrees_with_the_interpreter() {
    let Some((program, path)) = gpu_artifact() else { return };
    let specs = specs();
    let mut gpu = Optimizer::with_options(&program, &specs, options(Backend::Cuda)).expect("binds on the GPU");
    let mut reference = Optimizer::with_options(&program, &specs, options(Backend::Interp)).expect("binds");
    #[cfg(feature = "cuda")]
    let mut device = Optimizer::with_options(&program, &specs, options(Backend::Cuda)).expect("binds on the GPU");
    let p0: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(i as u64, s.numel())).collect();
    let (mut pg, mut pr) = (p0.clone(), p0.clone());
    #[cfg(feature = "cuda")]
    let stream = device.cuda_stream().expect("a cuda optimizer has a stream");
    #[cfg(feature = "cuda")]
    let mut pd: Vec<_> = p0.iter().map(|p| stream.clone_htod(p).expect("uploads")).collect();
    for t in 0..3 {
        let g: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(50 + 3 * t + i as u64, s.numel())).collect();
        let gv: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        gpu.step(&mut pg.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv).expect("steps on the GPU");
        reference.step(&mut pr.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv).expect("steps");
        #[cfg(feature = "cuda")]
        {
            let gd: Vec<_> = g.iter().map(|x| stream.clone_htod(x).expect("uploads")).collect();
            let gdr: Vec<_> = gd.iter().collect();
            device.step_device(&mut pd.iter_mut().collect::<Vec<_>>(), &gdr).expect("steps device buffers");
        }
    }
    for (i, s) in specs.iter().enumerate() {
        assert_close(&s.name, &pg[i], &pr[i]);
        let m = gpu.state(&s.name, "m").expect("state m");
        assert_close(&format!("{}.m", s.name), &m, &reference.state(&s.name, "m").expect("state m"));
        #[cfg(feature = "cuda")]
        assert_eq!(stream.clone_dtoh(&pd[i]).expect("downloads"), pg[i], "device and host APIs agree");
    }
    #[cfg(feature = "cuda")]
    assert_eq!(device.step_count(), 3);
    // A checkpoint saved from the device resumes exactly, on the device.
    let ckpt = std::env::temp_dir().join(format!("gdc-runtime-cuda-{}.safetensors", std::process::id()));
    gpu.save_checkpoint(&ckpt).expect("saves");
    let mut resumed = Optimizer::with_options(&program, &specs, options(Backend::Cuda)).expect("binds");
    resumed.load_checkpoint(&ckpt).expect("loads");
    let _ = std::fs::remove_file(&ckpt);
    let g: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(900 + i as u64, s.numel())).collect();
    let gv: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
    let mut pr2 = pg.clone();
    gpu.step(&mut pg.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv).expect("steps");
    resumed.step(&mut pr2.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv).expect("steps");
    assert_eq!(pg, pr2, "a resumed optimizer steps exactly as the original");
    // Misuse is the CPU's typed error.
    let e = gpu.step(&mut [&mut pg[0]], &[&g[0]]).expect_err("one tensor");
    assert!(e.to_string().contains("expected 3 tensors, got 1"), "{e}");
    println!("GPU checks passed on {}", path.to_string_lossy());
}

#[test]
fn on_a_gpu_a_non_finite_gradient_is_skipped_or_refused_with_nothing_changed() {
    let Some((program, path)) = gpu_artifact() else { return };
    let specs = specs();
    let grads = |t: u64| -> Vec<Vec<f32>> {
        specs.iter().enumerate().map(|(i, s)| noise(70 + 3 * t + i as u64, s.numel())).collect()
    };
    let run = |opt: &mut Optimizer, p: &mut [Vec<f32>], g: &[Vec<f32>]| {
        let gv: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        opt.step(&mut p.iter_mut().map(|x| x.as_mut_slice()).collect::<Vec<_>>(), &gv)
    };
    let p0: Vec<Vec<f32>> = specs.iter().enumerate().map(|(i, s)| noise(i as u64, s.numel())).collect();
    let mut reference = Optimizer::with_options(&program, &specs, options(Backend::Cuda)).expect("binds");
    let mut pr = p0.clone();
    for t in [1, 2, 4] {
        run(&mut reference, &mut pr, &grads(t)).expect("steps");
    }
    for (policy, bad, (pi, j)) in [
        (gdc_runtime::NonFinite::SkipStep, f32::NAN, (0, 0)),
        (gdc_runtime::NonFinite::SkipStep, f32::INFINITY, (1, 1000)),
        (gdc_runtime::NonFinite::Error, f32::NEG_INFINITY, (2, 0)),
    ] {
        let mut gpu = Optimizer::with_options(&program, &specs, options(Backend::Cuda)).expect("binds");
        gpu.set_non_finite(policy);
        let mut p = p0.clone();
        for t in [1, 2] {
            run(&mut gpu, &mut p, &grads(t)).expect("steps");
        }
        let before = (p.clone(), gpu.state(&specs[pi].name, "m"), gpu.step_count());
        let mut g = grads(3);
        g[pi][j] = bad;
        match (policy, run(&mut gpu, &mut p, &g)) {
            (gdc_runtime::NonFinite::SkipStep, Ok(())) => assert_eq!(gpu.skipped_steps(), 1),
            (gdc_runtime::NonFinite::Error, Err(RuntimeError::NonFiniteGradient { param, count: 1, .. })) => {
                assert_eq!(param, specs[pi].name)
            }
            (_, other) => panic!("{policy:?}, {bad} in {}[{j}]: {other:?}", specs[pi].name),
        }
        assert_eq!((p.clone(), gpu.state(&specs[pi].name, "m"), gpu.step_count()), before, "{policy:?}: changed");
        run(&mut gpu, &mut p, &grads(4)).expect("steps");
        assert_eq!(p, pr, "{policy:?}: training after the bad step differs from training without it");
    }
    println!("GPU non-finite checks passed on {}", path.to_string_lossy());
}
