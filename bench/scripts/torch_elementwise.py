"""PyTorch's CPU step for the elementwise optimizers of bench/scripts/tiers.py, timed in
this process (warm-up, then each step on its own): AdamW and Adagrad and SGD with momentum
fused where torch has a fused CPU kernel, RMSprop foreach, Lion as foreach ops (torch has
none). Prints one JSON line with the median, min and max in ms and which implementation ran."""

import argparse
import json
import statistics
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("opt", choices=["adamw", "lion", "sgd", "adagrad", "rmsprop"])
ap.add_argument("threads", type=int)
ap.add_argument("--numel", type=int, required=True)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--repeats", type=int, default=20)
a = ap.parse_args()
torch.set_num_threads(a.threads)
p = torch.nn.Parameter(torch.randn(a.numel) * 0.02)
p.grad = torch.randn(a.numel) * 1e-3


def make(kind):
    """The optimizer and the name of the implementation that runs."""
    if kind == "adamw":
        return torch.optim.AdamW([p], lr=1e-3, weight_decay=1e-2, fused=True), "AdamW fused"
    if kind == "sgd":
        return torch.optim.SGD([p], lr=1e-3, momentum=0.9, fused=True), "SGD(momentum=0.9) fused"
    if kind == "adagrad":
        return torch.optim.Adagrad([p], lr=1e-2, fused=True), "Adagrad fused"
    if kind == "rmsprop":
        return torch.optim.RMSprop([p], lr=1e-2, foreach=True), "RMSprop foreach"
    raise ValueError(kind)


if a.opt == "lion":
    avg = torch.zeros_like(p)

    def step():
        with torch.no_grad():
            # lion-pytorch's update in foreach ops (gdc's scripts/gpu_lion.py).
            torch._foreach_mul_([p.data], 1 - 1e-4 * 1e-3)
            update = torch._foreach_lerp([avg], [p.grad], 1 - 0.9)
            torch._foreach_sign_(update)
            torch._foreach_add_([p.data], update, alpha=-1e-4)
            torch._foreach_lerp_([avg], [p.grad], 1 - 0.99)

    impl = "Lion foreach ops"
else:
    opt, impl = make(a.opt)
    step = opt.step

for _ in range(a.warmup):
    step()
ts = []
for _ in range(a.repeats):
    t = time.perf_counter()
    step()
    ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"impl": f"torch {torch.__version__} {impl}", "threads": torch.get_num_threads(), "numel": a.numel,
                  "median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts)}))
