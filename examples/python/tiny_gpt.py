"""A tiny GPT-style character model in plain PyTorch, and the text it trains on.

The text is the one `examples/charlm` trains on by default: the licence texts of Debian's
base-files package (/usr/share/common-licenses), read as charlm's `read_text` reads a
directory (every distinct regular file, symlinks resolved and each target read once, in
order of canonical path, each followed by a newline), its distinct characters as the
vocabulary and the last tenth held out for validation (charlm's `Corpus::new(text, 0.1)`).

    corpus = Corpus.load()
    model = TinyGPT(GPTConfig(vocab_size=corpus.vocab_size), seed=0)
    batches = BatchSampler(corpus.train, batch=16, ctx=32, seed=0)
    x, y = batches.next()
    loss = model.loss(x, y)

Everything is deterministic: the initialisation draws from its own seeded generator, and the
batch sampler from a `torch.Generator` of its own, so neither depends on (or disturbs) torch's
global random state.
"""

from dataclasses import dataclass
import math
import os

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_TEXT = "/usr/share/common-licenses"


# ----- data ---------------------------------------------------------------------------


def read_text(path=DEFAULT_TEXT):
    """`path` (a file, or a directory whose distinct regular files are read in order of
    canonical path), each file followed by a newline, as charlm reads it. Returns
    (text, files)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        if path == DEFAULT_TEXT:
            raise FileNotFoundError(
                f"cannot read the default text {DEFAULT_TEXT}: it comes with Debian's base-files package; "
                "pass another file or directory of text"
            )
        raise FileNotFoundError(f"cannot read {path}: no such file or directory")
    if os.path.isdir(path):
        files = set()
        for entry in os.listdir(path):
            canon = os.path.realpath(os.path.join(path, entry))
            if os.path.isfile(canon):
                files.add(canon)
        files = sorted(files)
    else:
        files = [path]
    parts = []
    for f in files:
        with open(f, "rb") as fh:
            # Rust's String::from_utf8_lossy: invalid sequences become U+FFFD.
            parts.append(fh.read().decode("utf-8", errors="replace"))
        parts.append("\n")
    text = "".join(parts)
    if len(text) < 1000:
        raise ValueError(f"{path} holds under 1000 characters of text: too little to train on")
    return text, files


class Corpus:
    """A text as character indices: `vocab` (the distinct characters, sorted by code point;
    a character's index is its token), `train` and `val` (1-D int64 tensors, the last
    `val_fraction` of the characters held out)."""

    def __init__(self, text, val_fraction=0.1):
        self.vocab = sorted(set(text))
        index = {c: i for i, c in enumerate(self.vocab)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.long)
        # Rounded half away from zero, as Rust's f64::round.
        n_val = min(int(math.floor(len(ids) * val_fraction + 0.5)), len(ids))
        cut = len(ids) - n_val
        self.train = ids[:cut]
        self.val = ids[cut:]

    @classmethod
    def load(cls, path=DEFAULT_TEXT, val_fraction=0.1):
        text, _files = read_text(path)
        return cls(text, val_fraction)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def decode(self, ids):
        return "".join(self.vocab[int(i)] for i in ids)


class BatchSampler:
    """Random windows of `ctx + 1` tokens of `data`, `batch` at a time, drawn from a
    `torch.Generator` seeded with `seed`: two samplers with the same seed give the same
    batches."""

    def __init__(self, data, batch=16, ctx=32, seed=0):
        if len(data) <= ctx + 1:
            raise ValueError(f"{len(data)} tokens are too few for windows of {ctx + 1}")
        self.data = data
        self.batch = batch
        self.ctx = ctx
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(ctx)

    def next(self):
        """(inputs, targets), each [batch, ctx] int64; targets are the inputs shifted by one."""
        starts = torch.randint(0, len(self.data) - self.ctx, (self.batch,), generator=self.generator)
        idx = starts[:, None] + self._offsets
        return self.data[idx], self.data[idx + 1]

    def __iter__(self):
        while True:
            yield self.next()


# ----- model --------------------------------------------------------------------------


@dataclass
class GPTConfig:
    vocab_size: int
    ctx: int = 32
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    mlp_ratio: int = 4


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.d_model % cfg.heads:
            raise ValueError(f"d_model {cfg.d_model} is not a multiple of heads {cfg.heads}")
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # [b, t, d] -> [b, heads, t, d / heads]
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, `layers` pre-norm blocks, a final LayerNorm and an
    untied output head `lm_head` (so `gdc.torch.infer_roles` finds it). Initialised as GPT-2
    (normal(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2·layers))
    from a generator seeded with `seed`."""

    def __init__(self, cfg, seed=0):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed=0):
        gen = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * self.cfg.layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif isinstance(self.get_submodule(name.rsplit(".", 1)[0]), nn.LayerNorm):
                p.fill_(1.0)
            else:
                std = residual_std if name.endswith("proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, idx):
        """Logits [batch, t, vocab] for token indices [batch, t], t <= ctx."""
        t = idx.shape[1]
        if t > self.cfg.ctx:
            raise ValueError(f"sequence of {t} tokens is longer than the context {self.cfg.ctx}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def loss(self, idx, targets):
        """Mean cross-entropy of the next character, in nats."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def evaluate(self, data, batch=64, max_windows=None):
        """Mean loss over the non-overlapping windows of `data` (every token but the first is
        a target once), at most `max_windows` of them."""
        ctx = self.cfg.ctx
        starts = torch.arange(0, len(data) - ctx, ctx)
        if max_windows is not None:
            starts = starts[:max_windows]
        offsets = torch.arange(ctx)
        total = 0.0
        for i in range(0, len(starts), batch):
            idx = starts[i : i + batch, None] + offsets
            total += float(self.loss(data[idx], data[idx + 1])) * len(idx)
        return total / max(len(starts), 1)

    @torch.no_grad()
    def generate(self, idx, n, temperature=1.0, generator=None):
        """`idx` [batch, t] extended by `n` sampled characters."""
        for _ in range(n):
            logits = self(idx[:, -self.cfg.ctx :])[:, -1] / temperature
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


__all__ = ["DEFAULT_TEXT", "read_text", "Corpus", "BatchSampler", "GPTConfig", "TinyGPT"]
