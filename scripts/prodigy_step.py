"""Prodigy's CPU step in PyTorch as its authors ship it (prodigyopt 1.1.2, `pip install
prodigyopt`), timed in this process: warm-up, then each step on its own. The contender of
`scripts/bench-prodigy`. Usage: python prodigy_step.py THREADS --numel N --tensors K
[--warmup 5] [--repeats 20]. Prints one JSON line: median/min/max ms of the timed steps."""
import argparse
import json
import statistics
import time

import torch
from prodigyopt import Prodigy

ap = argparse.ArgumentParser()
ap.add_argument("threads", type=int)
ap.add_argument("--numel", type=int, required=True)
ap.add_argument("--tensors", type=int, default=1)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--repeats", type=int, default=20)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
n = a.numel // a.tensors
ps = [torch.nn.Parameter(torch.randn(n) * 0.02) for _ in range(a.tensors)]
for p in ps:
    p.grad = torch.randn(n) * 1e-3
opt = Prodigy(ps, lr=1.0, weight_decay=0.01)
for _ in range(a.warmup):
    opt.step()
ts = []
for _ in range(a.repeats):
    t = time.perf_counter()
    opt.step()
    ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"impl": "prodigyopt 1.1.2 (torch %s)" % torch.__version__, "threads": torch.get_num_threads(),
                  "tensors": a.tensors, "numel": n * a.tensors,
                  "median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts)}))
