//! Fused CPU operations with hand-written backward passes, for the three places where
//! candle's composed ops are slow to differentiate on the CPU: LayerNorm, the causal softmax
//! of attention, and adding a bias (the reductions over broadcast dimensions dominate the
//! step otherwise). Float32, contiguous inputs.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The float32 elements of a contiguous tensor's storage.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{op}: the input is not contiguous") };
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op}: the input is not float32"),
    }
}

/// The size of the last axis.
fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

/// LayerNorm over the last axis, `(x - mean) / sqrt(var + eps) * weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(weight, bias, LayerNorm { eps })
}

struct LayerNorm {
    eps: f32,
}

/// Each row's mean and reciprocal standard deviation.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "charlm-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32s(s1, l1, "layer_norm")?, f32s(s2, l2, "layer_norm")?, f32s(s3, l3, "layer_norm")?);
        let d = last_dim(l1);
        if w.len() != d || b.len() != d {
            candle_core::bail!("layer_norm: gain and bias must have {d} elements");
        }
        let mut out = vec![0f32; x.len()];
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(row, self.eps);
            for i in 0..d {
                o[i] = (row[i] - mean) * rstd * w[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let d = w.elem_count();
        let n = x.elem_count() / d;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.get(n)?;
        let db = packed.get(n + 1)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// LayerNorm's gradients from `(x, weight, grad)`, packed as `[rows + 2, d]`: the rows of
/// dx, then d(weight), then d(bias).
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "charlm-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (f32s(s1, l1, "layer_norm")?, f32s(s2, l2, "layer_norm")?, f32s(s3, l3, "layer_norm")?);
        let d = last_dim(l1);
        let rows = x.len() / d;
        let mut out = vec![0f32; (rows + 2) * d];
        let (dx, sums) = out.split_at_mut(rows * d);
        let (dw, db) = sums.split_at_mut(d);
        let mut xhat = vec![0f32; d];
        for ((row, grow), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(row, self.eps);
            let (mut mean_gw, mut mean_gwx) = (0f32, 0f32);
            for i in 0..d {
                xhat[i] = (row[i] - mean) * rstd;
                let gw = grow[i] * w[i];
                mean_gw += gw;
                mean_gwx += gw * xhat[i];
                dw[i] += grow[i] * xhat[i];
                db[i] += grow[i];
            }
            mean_gw /= d as f32;
            mean_gwx /= d as f32;
            for i in 0..d {
                dxr[i] = rstd * (grow[i] * w[i] - mean_gw - xhat[i] * mean_gwx);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

/// Softmax over the last axis of `[..., t, t]` attention scores with a causal mask: row `i`
/// attends to columns `0..=i`, the others get probability zero.
pub fn causal_softmax(scores: &Tensor) -> Result<Tensor> {
    scores.contiguous()?.apply_op1(CausalSoftmax)
}

struct CausalSoftmax;

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "charlm-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "causal_softmax")?;
        let t = last_dim(l);
        let dims = l.dims();
        if dims.len() < 2 || dims[dims.len() - 2] != t {
            candle_core::bail!("causal_softmax: expected [..., t, t], got {dims:?}");
        }
        let mut out = vec![0f32; x.len()];
        for (r, (row, o)) in x.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
            let i = r % t;
            let max = row[..=i].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for j in 0..=i {
                o[j] = (row[j] - max).exp();
                sum += o[j];
            }
            for v in &mut o[..=i] {
                *v /= sum;
            }
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

/// The softmax gradient from `(y, grad)`: `y * (grad - sum(grad * y))` per row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "charlm-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (f32s(s1, l1, "softmax_grad")?, f32s(s2, l2, "softmax_grad")?);
        let t = last_dim(l1);
        let mut out = vec![0f32; y.len()];
        for ((yr, gr), o) in y.chunks_exact(t).zip(g.chunks_exact(t)).zip(out.chunks_exact_mut(t)) {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for j in 0..t {
                o[j] = yr[j] * (gr[j] - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `x + bias`, the bias broadcast along the last axis.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(bias, AddBias)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "charlm-add-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (f32s(s1, l1, "add_bias")?, f32s(s2, l2, "add_bias")?);
        let d = last_dim(l1);
        if b.len() != d {
            candle_core::bail!("add_bias: the bias has {} elements, the last axis {d}", b.len());
        }
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(d) {
            for (v, bi) in row.iter_mut().zip(b) {
                *v += bi;
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// The sum over every axis but the last.
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "charlm-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "column_sum")?;
        let d = last_dim(l);
        let mut out = vec![0f32; d];
        for row in x.chunks_exact(d) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(d)))
    }
}
