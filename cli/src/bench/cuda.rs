//! `gdc bench --backend cuda`: times the step over device buffers with CUDA events (warm-up
//! first, median of the repeats), the host's wall time per step beside it (the step returns
//! once the device has finished), and a device-to-device copy of as many floats as there are
//! parameters, the same way in the same run: the copy moves 8 bytes per element, the limit
//! against which a memory-bound step's effective bandwidth is read.

use gdc_runtime::bench::{fill_uniform, Stats};
use gdc_runtime::cudarc::driver::sys::CUevent_flags;
use gdc_runtime::cudarc::driver::{CudaSlice, CudaStream};
use gdc_runtime::{Optimizer, ParamSpec, Program};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Step and copy timings of one run.
pub struct Report {
    /// Device time per step (CUDA events).
    pub step: Stats,
    /// Host wall time per step, launch and synchronisation included.
    pub wall: Stats,
    /// Device time of a device-to-device copy of `numel` floats.
    pub copy: Stats,
}

fn err(what: &str) -> impl Fn(gdc_runtime::cudarc::driver::DriverError) -> String + '_ {
    move |e| format!("CUDA: {what}: {e:?}")
}

/// Device time of `f` on `stream`, in seconds, between two events.
fn events(stream: &Arc<CudaStream>, f: &mut dyn FnMut() -> Result<(), String>) -> Result<f64, String> {
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = stream.record_event(flags).map_err(err("recording an event"))?;
    f()?;
    let end = stream.record_event(flags).map_err(err("recording an event"))?;
    let ms = start.elapsed_ms(&end).map_err(err("reading an event"))?;
    Ok(f64::from(ms) * 1e-3)
}

pub fn time(opt: &mut Optimizer, specs: &[ParamSpec], warmup: usize, repeats: usize) -> Result<Report, String> {
    let stream = opt.cuda_stream().ok_or("the optimizer is not on the cuda backend")?;
    let mut seed = 0x5eed_0001_u64;
    let mut params: Vec<CudaSlice<f32>> = Vec::new();
    let mut grads: Vec<CudaSlice<f32>> = Vec::new();
    for s in specs {
        params.push(stream.clone_htod(&fill_uniform(&mut seed, s.numel(), 1.0)).map_err(err("uploading"))?);
    }
    for s in specs {
        grads.push(stream.clone_htod(&fill_uniform(&mut seed, s.numel(), 0.1)).map_err(err("uploading"))?);
    }
    let mut step = || -> Result<(), String> {
        let mut p: Vec<&mut CudaSlice<f32>> = params.iter_mut().collect();
        let g: Vec<&CudaSlice<f32>> = grads.iter().collect();
        opt.step_device(&mut p, &g).map_err(|e| format!("the step failed: {e}"))
    };
    for _ in 0..warmup {
        step()?;
    }
    let (mut device, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        device.push(events(&stream, &mut step)?);
        wall.push(t.elapsed().as_secs_f64());
    }
    // The bandwidth limit: copy as many floats as the parameters hold, device to device.
    let numel: usize = specs.iter().map(|s| s.numel()).sum();
    let src = stream.clone_htod(&fill_uniform(&mut seed, numel, 1.0)).map_err(err("uploading"))?;
    let mut dst = stream.alloc_zeros::<f32>(numel).map_err(err("allocating"))?;
    let mut copy = || stream.memcpy_dtod(&src, &mut dst).map_err(err("copying"));
    for _ in 0..warmup.max(1) {
        copy()?;
    }
    let mut copies = Vec::new();
    for _ in 0..repeats {
        copies.push(events(&stream, &mut copy)?);
    }
    Ok(Report { step: Stats::from_samples(device), wall: Stats::from_samples(wall), copy: Stats::from_samples(copies) })
}

/// Prints the report (text or `--json`).
pub fn print(
    args: &super::BenchArgs,
    program: &Program,
    r: &Report,
    numel: usize,
    tensors: usize,
    bytes: u64,
) -> ExitCode {
    let gbps = bytes as f64 / r.step.median_s / 1e9;
    let copy_gbps = 8.0 * numel as f64 / r.copy.median_s / 1e9;
    if args.json {
        let json = serde_json::json!({
            "optimizer": program.name(),
            "file": args.file,
            "backend": "cuda",
            "numel": numel,
            "tensors": tensors,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "median_s": r.step.median_s,
            "min_s": r.step.min_s,
            "max_s": r.step.max_s,
            "wall_median_s": r.wall.median_s,
            "bytes_per_step": bytes,
            "gbps": gbps,
            "copy_median_s": r.copy.median_s,
            "copy_gbps": copy_gbps,
            "fraction_of_copy": gbps / copy_gbps,
        });
        println!("{json}");
    } else {
        println!(
            "bench {} on cuda: {numel} parameters in {tensors} tensor{}, {} timed step{} after {} warm-up",
            program.name(),
            super::plural(tensors),
            args.repeats,
            super::plural(args.repeats),
            args.warmup
        );
        println!(
            "step (CUDA events): median {} (min {} – max {}); host wall {}",
            super::seconds(r.step.median_s),
            super::seconds(r.step.min_s),
            super::seconds(r.step.max_s),
            super::seconds(r.wall.median_s)
        );
        println!(
            "bytes per step: {bytes} ({:.1} per parameter), effective {gbps:.1} GB/s = {:.1}% of a device copy ({copy_gbps:.1} GB/s, median {})",
            bytes as f64 / numel as f64,
            100.0 * gbps / copy_gbps,
            super::seconds(r.copy.median_s)
        );
    }
    ExitCode::SUCCESS
}
