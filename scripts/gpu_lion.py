#!/usr/bin/env python3
"""PyTorch's side of gdc's Lion timing (PyTorch has no Lion): the step as a user writes it
with foreach ops (Chen et al. 2023, as in lion-pytorch), on one tensor of --numel floats
and on the tensors listed in --sizes, timed like torch_baselines.py (CUDA events, warm-up,
median). One JSON line each, in torch_baselines.py's format (20 bytes per element moved).
"""
import argparse, os, sys
import torch

sys.path.insert(0, os.environ.get("GDC_PACK", "gpu-pack"))
from torch_baselines import report, timer  # noqa: E402


def lion_step(params, grads, avgs, lr=1e-4, beta1=0.9, beta2=0.99, wd=0.0):
    torch._foreach_mul_(params, 1 - lr * wd)
    update = torch._foreach_lerp(avgs, grads, 1 - beta1)
    torch._foreach_sign_(update)
    torch._foreach_add_(params, update, alpha=-lr)
    torch._foreach_lerp_(avgs, grads, 1 - beta2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", type=int, default=1 << 28)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu: a quick self-test without a GPU")
    a = ap.parse_args()
    sizes = [int(s) for s in open(a.sizes).read().split()]
    for layout, shapes in (("one tensor", [a.numel]), (f"{len(sizes)} mixed tensors", sizes)):
        params = [torch.randn(s, device=a.device) for s in shapes]
        grads = [torch.randn(s, device=a.device) for s in shapes]
        avgs = [torch.zeros(s, device=a.device) for s in shapes]
        n = sum(shapes)
        with torch.no_grad():
            stats = timer(a.device, lambda: lion_step(params, grads, avgs, wd=0.01), 5, a.repeats)
        report(f"torch Lion foreach, {layout}", a.device, n, len(shapes), stats, 20 * n)
        del params, grads, avgs
        if a.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
