//! Validation: the mean loss over every non-overlapping window of the held-out text, at the
//! point the optimizer means (for schedule-free, x rather than the y it holds).

use crate::data::window_starts;
use crate::error::Result;
use crate::model::Model;
use candle_core::{Device, Tensor};
use gdc_candle::GdcOptimizer;

/// The mean cross-entropy (nats per character) of the model over all of `data`, cut into
/// non-overlapping windows of `ctx + 1` characters, `batch` windows per forward pass.
pub fn mean_loss(model: &Model, data: &[u32], batch: usize) -> Result<f64> {
    let ctx = model.config().ctx;
    let starts = window_starts(data, ctx);
    let (mut total, mut count) = (0.0f64, 0usize);
    for chunk in starts.chunks(batch.max(1)) {
        let mut inputs = Vec::with_capacity(chunk.len() * ctx);
        let mut targets = Vec::with_capacity(chunk.len() * ctx);
        for &s in chunk {
            inputs.extend_from_slice(&data[s..s + ctx]);
            targets.extend_from_slice(&data[s + 1..s + ctx + 1]);
        }
        let x = Tensor::from_vec(inputs, (chunk.len(), ctx), &Device::Cpu)?;
        let y = Tensor::from_vec(targets, (chunk.len(), ctx), &Device::Cpu)?;
        let loss = model.loss(&x, &y)?.to_scalar::<f32>()? as f64;
        total += loss * chunk.len() as f64;
        count += chunk.len();
    }
    Ok(total / count.max(1) as f64)
}

/// [`mean_loss`] at the point to evaluate. For a schedule-free optimizer (`schedule_free`
/// holds its `beta1`) the variables hold y, where gradients are taken; the iterate to
/// evaluate is the average x = (y - (1 - beta1) z) / beta1, with z the optimizer's state.
/// x is written into the variables for the evaluation and y restored after it, so training
/// resumes exactly where it was. Before the first step z does not exist yet and x = y.
pub fn validation_loss(
    model: &Model,
    opt: &GdcOptimizer,
    data: &[u32],
    batch: usize,
    schedule_free: Option<f64>,
) -> Result<f64> {
    let Some(beta1) = schedule_free else { return mean_loss(model, data, batch) };
    let mut saved = Vec::new();
    for v in opt.vars() {
        let Some(z) = opt.state(&v.name, "z") else { continue };
        let y = v.var.as_tensor().copy()?;
        let z = Tensor::from_vec(z, v.var.dims(), &Device::Cpu)?;
        let x = ((&y - (z * (1.0 - beta1))?)? / beta1)?;
        v.var.set(&x)?;
        saved.push((v.var.clone(), y));
    }
    let loss = mean_loss(model, data, batch);
    for (var, y) in saved {
        var.set(&y)?;
    }
    loss
}
