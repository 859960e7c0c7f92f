//! The model: a small pre-LayerNorm decoder-only transformer over characters (learned
//! positional embedding, causal multi-head attention, a squared-ReLU MLP, an untied output head),
//! built on a candle-nn `VarMap`, with its parameters' roles and a seeded initialisation.

use crate::error::{Error, Result};
use crate::ops;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};
use gdc_candle::Role;
use gdc_train_kit::Rng;

/// The model's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    pub vocab: usize,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    /// The context length: the longest input, and the positional embedding's rows.
    pub ctx: usize,
}

impl Config {
    /// Refuses shapes the model cannot have.
    pub fn check(&self) -> Result<()> {
        if self.vocab == 0 || self.d_model == 0 || self.heads == 0 || self.layers == 0 || self.ctx == 0 {
            return Err(Error("the model's sizes must all be positive".into()));
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(Error(format!("d_model {} is not a multiple of heads {}", self.d_model, self.heads)));
        }
        Ok(())
    }
}

/// LayerNorm with a gain and a bias, through the fused op of [`ops::layer_norm`] (candle-nn's
/// fused `LayerNorm` has no backward pass, and composing it from tensor ops is slow).
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(size: usize, vb: VarBuilder) -> Result<Norm> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Norm { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(x, &self.weight, &self.bias, 1e-5)?)
    }
}

/// A linear layer with a bias: `x W^T + b` over the last axis.
struct Dense {
    linear: Linear,
    bias: Tensor,
}

impl Dense {
    fn new(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Dense> {
        let weight = vb.get_with_hints((d_out, d_in), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bias = vb.get_with_hints(d_out, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Dense { linear: Linear::new(weight, None), bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::add_bias(&self.linear.forward(x)?, &self.bias)?)
    }
}

struct Block {
    ln1: Norm,
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    ln2: Norm,
    fc: Dense,
    proj: Dense,
}

impl Block {
    fn new(d: usize, vb: VarBuilder) -> Result<Block> {
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Block {
            ln1: Norm::new(d, vb.pp("ln1"))?,
            q: Dense::new(d, d, attn.pp("q"))?,
            k: Dense::new(d, d, attn.pp("k"))?,
            v: Dense::new(d, d, attn.pp("v"))?,
            o: Dense::new(d, d, attn.pp("o"))?,
            ln2: Norm::new(d, vb.pp("ln2"))?,
            fc: Dense::new(d, 4 * d, mlp.pp("fc"))?,
            proj: Dense::new(4 * d, d, mlp.pp("proj"))?,
        })
    }

    fn attention(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let dh = d / heads;
        let split = |l: &Dense| -> Result<Tensor> {
            Ok(l.forward(x)?.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous()?)
        };
        let (q, k, v) = (split(&self.q)?, split(&self.k)?, split(&self.v)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?;
        let y = ops::causal_softmax(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.o.forward(&y)
    }

    fn forward(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let x = (x + self.attention(&self.ln1.forward(x)?, heads)?)?;
        let h = self.fc.forward(&self.ln2.forward(&x)?)?.relu()?.sqr()?;
        Ok((&x + self.proj.forward(&h)?)?)
    }
}

/// The transformer. Its variables live in the `VarMap` it was built on, named by their
/// `VarBuilder` paths (`tok.weight`, `blocks.0.attn.q.weight`, `head.weight`, ...).
pub struct Model {
    config: Config,
    tok: Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Linear,
}

impl Model {
    /// Builds the model's variables in `varmap` (float32, CPU) with candle-nn's default
    /// initialisation; [`init`] then gives them seeded values.
    pub fn new(config: Config, varmap: &VarMap) -> Result<Model> {
        config.check()?;
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        let d = config.d_model;
        let tok = candle_nn::embedding(config.vocab, d, vb.pp("tok"))?;
        let pos = vb.pp("pos").get_with_hints((config.ctx, d), "weight", candle_nn::Init::Const(0.0))?;
        let blocks = (0..config.layers).map(|i| Block::new(d, vb.pp(format!("blocks.{i}")))).collect::<Result<_>>()?;
        let ln_f = Norm::new(d, vb.pp("ln_f"))?;
        let head = candle_nn::linear_no_bias(d, config.vocab, vb.pp("head"))?;
        Ok(Model { config, tok, pos, blocks, ln_f, head })
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// The logits `[batch, t, vocab]` for token ids `[batch, t]` (`t <= ctx`).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.config.ctx {
            return Err(Error(format!("an input of {t} tokens is longer than the context {}", self.config.ctx)));
        }
        let mut x = self.tok.forward(ids)?.broadcast_add(&self.pos.narrow(0, 0, t)?)?;
        for block in &self.blocks {
            x = block.forward(&x, self.config.heads)?;
        }
        Ok(self.head.forward(&self.ln_f.forward(&x)?)?)
    }

    /// The mean cross-entropy (nats per character) of predicting `targets` from `ids`, both
    /// `[batch, t]`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        let (b, t, v) = logits.dims3()?;
        Ok(candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)?)
    }
}

/// The role a variable plays, from its name: what a policy such as `muon_adamw.gd` routes on.
/// Token and positional embeddings are `embedding`, the output head `output`, the attention
/// and MLP weight matrices `hidden`, LayerNorm gains and biases `norm`, other biases `bias`.
pub fn role_of(name: &str, shape: &[usize]) -> Role {
    let last = name.rsplit('.').nth(1).unwrap_or("");
    if name.starts_with("tok.") || name.starts_with("pos.") {
        Role::Embedding
    } else if name.starts_with("head.") {
        Role::Output
    } else if last.starts_with("ln") {
        Role::Norm
    } else if name.ends_with(".bias") {
        Role::Bias
    } else if shape.len() == 2 {
        Role::Hidden
    } else {
        Role::Other
    }
}

/// Gives every variable of `varmap` seeded values (candle cannot seed its CPU generator):
/// GPT-2's scheme, normal with standard deviation 0.02 for embeddings and weight matrices,
/// 0.02 / sqrt(2 layers) for the projections back into the residual stream, zero biases,
/// LayerNorm gains one. The same seed gives the same model on every machine.
pub fn init(varmap: &VarMap, layers: usize, seed: u64) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| Error("the VarMap's lock is poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed);
    let residual = 0.02 / (2.0 * layers as f64).sqrt();
    for name in names {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match role_of(name, &shape) {
            Role::Norm if name.ends_with(".weight") => vec![1.0; n],
            Role::Norm | Role::Bias => vec![0.0; n],
            _ => {
                let std = if name.ends_with(".o.weight") || name.ends_with("proj.weight") { residual } else { 0.02 };
                (0..n).map(|_| (std * rng.normal()) as f32).collect()
            }
        };
        var.set(&Tensor::from_vec(values, shape, &Device::Cpu)?)?;
    }
    Ok(())
}

/// The number of scalar parameters in `varmap`.
pub fn param_count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}
