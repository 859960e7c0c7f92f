//! The fused operations' hand-written gradients against candle's composed ops.

use candle_core::{Device, Tensor, Var, D};
use charlm::ops::{add_bias, causal_softmax, layer_norm};

fn var(shape: &[usize], seed: u64) -> Var {
    let mut rng = gdc_train_kit::Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn close(a: &Tensor, b: &Tensor, what: &str) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn layer_norm_matches_the_composed_op_and_its_gradients() {
    let (x, w, b, r) = (var(&[3, 5, 8], 1), var(&[8], 2), var(&[8], 3), var(&[3, 5, 8], 4));
    let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    let composed = candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    close(&fused, &composed, "value");
    let gf = (fused * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let gc = (composed * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    for (v, name) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
        close(gf.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap(), name);
    }
}

#[test]
fn causal_softmax_matches_a_masked_softmax_and_its_gradient() {
    let (t, x, r) = (6, var(&[2, 3, 6, 6], 5), var(&[2, 3, 6, 6], 6));
    let mask: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let fused = causal_softmax(x.as_tensor()).unwrap();
    let composed = candle_nn::ops::softmax(&x.as_tensor().broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
    close(&fused, &composed, "value");
    let gf = (fused * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let gc = (composed * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    close(gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap(), "dx");
}

#[test]
fn add_bias_matches_broadcast_add_and_its_gradients() {
    let (x, b, r) = (var(&[4, 3, 7], 7), var(&[7], 8), var(&[4, 3, 7], 9));
    let fused = add_bias(x.as_tensor(), b.as_tensor()).unwrap();
    let composed = x.as_tensor().broadcast_add(b.as_tensor()).unwrap();
    close(&fused, &composed, "value");
    let gf = (fused * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let gc = (composed * r.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    close(gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap(), "dx");
    close(gf.get(b.as_tensor()).unwrap(), gc.get(b.as_tensor()).unwrap(), "db");
}
