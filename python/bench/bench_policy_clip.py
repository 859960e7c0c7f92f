#!/usr/bin/env python3
"""Gradient clipping in front of a policy, timed from Python: `optimizer.step()` of
gdc.torch.Optimizer on muon_adamw_clip.gd (`part clip_grad_norm` in front of Muon and AdamW)
against PyTorch's recipe, `torch.nn.utils.clip_grad_norm_(foreach=True)` then
`torch.optim.Muon` and `torch.optim.AdamW(fused=True)`, and both without the clip
(muon_adamw.gd; Muon + fused AdamW), on a GPT-style parameter set (4 layers at d_model 256,
vocab 8192, context 256, untied head: 7.42 M elements, 3.15 M of them in Muon's 16 matrices).

    python3 python/bench/bench_policy_clip.py [--rounds 5] [--threads 2]

Every contender runs in a process of its own (this script re-invoked with --worker), the
contenders interleaved in rotated rounds; each worker sets torch.set_num_threads(threads)
(and gdc threads), fixes random gradients once, takes 3 warm-up steps and times 15
(time.perf_counter around step(), the clip included where there is one) and reports the
median. The parent reports the median over rounds and the rounds' range. Both sides run
Muon's Newton-Schulz products with bfloat16 operands (torch's default and muon.gd's)."""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OPTIMIZERS = os.path.join(ROOT, "examples", "optimizers")
CONTENDERS = ["gdc-clip", "torch-clip", "gdc", "torch"]


def shapes(layers=4, d=256, vocab=8192, ctx=256):
    """(name, shape, role) of a GPT-2-style model."""
    out = [("wte", (vocab, d), "embedding"), ("wpe", (ctx, d), "embedding")]
    for i in range(layers):
        p = f"h.{i}."
        out += [
            (p + "ln_1.weight", (d,), "norm"),
            (p + "ln_1.bias", (d,), "norm"),
            (p + "attn.c_attn.weight", (3 * d, d), "hidden"),
            (p + "attn.c_attn.bias", (3 * d,), "bias"),
            (p + "attn.c_proj.weight", (d, d), "hidden"),
            (p + "attn.c_proj.bias", (d,), "bias"),
            (p + "ln_2.weight", (d,), "norm"),
            (p + "ln_2.bias", (d,), "norm"),
            (p + "mlp.c_fc.weight", (4 * d, d), "hidden"),
            (p + "mlp.c_fc.bias", (4 * d,), "bias"),
            (p + "mlp.c_proj.weight", (d, 4 * d), "hidden"),
            (p + "mlp.c_proj.bias", (d,), "bias"),
        ]
    return out + [("ln_f.weight", (d,), "norm"), ("ln_f.bias", (d,), "norm"), ("lm_head.weight", (vocab, d), "output")]


def worker(name, threads, warmup=3, steps=15):
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    named = []
    roles = {}
    for n, s, role in shapes():
        p = torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02)
        p.grad = torch.randn(s, generator=gen)
        named.append((n, p))
        roles[n] = role
    params = [p for _, p in named]
    clip = name.endswith("-clip")
    if name.startswith("gdc"):
        import gdc.torch

        path = os.path.join(OPTIMIZERS, "muon_adamw_clip.gd" if clip else "muon_adamw.gd")
        hypers = {"max_norm": 1.0} if clip else {}
        opt = gdc.torch.Optimizer(path, named, roles=roles, threads=threads, **hypers)

        def step():
            opt.step()
    else:
        hidden = [p for n, p in named if roles[n] == "hidden"]
        rest = [p for n, p in named if roles[n] != "hidden"]
        muon = torch.optim.Muon(hidden, lr=1e-3, weight_decay=0.1)
        adamw = torch.optim.AdamW(rest, lr=1e-3, weight_decay=0.01, fused=True)

        def step():
            if clip:
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            muon.step()
            adamw.step()
    # The gradients are re-set each step: clip_grad_norm_ scales them in place.
    grads = [p.grad.clone() for p in params]
    times = []
    for k in range(warmup + steps):
        for p, g in zip(params, grads):
            p.grad.copy_(g)
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        if k >= warmup:
            times.append(t1 - t0)
    print(json.dumps({"median_ms": statistics.median(times) * 1e3}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    numel = sum(math.prod(s) for _, s, _ in shapes())
    hidden = sum(math.prod(s) for _, s, r in shapes() if r == "hidden")
    print(f"{numel / 1e6:.2f} M elements, {hidden / 1e6:.2f} M in hidden matrices; threads {args.threads}")
    got = {c: [] for c in CONTENDERS}
    for r in range(args.rounds):
        order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[: r % len(CONTENDERS)]
        for c in order:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", c, "--threads", str(args.threads)],
                check=True, capture_output=True, text=True,
            ).stdout
            got[c].append(json.loads(out.strip().splitlines()[-1])["median_ms"])
        print(f"round {r}: " + ", ".join(f"{c} {got[c][-1]:.2f}" for c in CONTENDERS), flush=True)
    med = {c: statistics.median(v) for c, v in got.items()}
    for c in CONTENDERS:
        print(f"{c:11} {med[c]:8.2f} ms  [{min(got[c]):.2f}-{max(got[c]):.2f}]")
    print(f"clip overhead: gdc {med['gdc-clip'] - med['gdc']:.2f} ms, torch {med['torch-clip'] - med['torch']:.2f} ms")
    print(f"torch-clip / gdc-clip: {med['torch-clip'] / med['gdc-clip']:.2f}x; torch / gdc: {med['torch'] / med['gdc']:.2f}x")


if __name__ == "__main__":
    main()
