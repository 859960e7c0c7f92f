#!/usr/bin/env python3
"""PyTorch's side of gdc's clipped-AdamW timing: torch.nn.utils.clip_grad_norm_ (foreach)
followed by torch.optim.AdamW(fused=True), the usual pre-training step, on one tensor of
--numel floats and on the tensors listed in --sizes, timed like torch_baselines.py (CUDA
events, warm-up, median). One JSON line each, in torch_baselines.py's format (AdamW's 28
bytes per element plus the norm's read of the gradient: 32).
"""
import argparse, os, sys
import torch

sys.path.insert(0, os.environ.get("GDC_PACK", "gpu-pack"))
from torch_baselines import report, timer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", type=int, default=1 << 28)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu: a quick self-test without a GPU")
    a = ap.parse_args()
    sizes = [int(s) for s in open(a.sizes).read().split()]
    for layout, shapes in (("one tensor", [a.numel]), (f"{len(sizes)} mixed tensors", sizes)):
        params = [torch.nn.Parameter(torch.randn(s, device=a.device)) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        fused = a.device == "cuda"
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=fused)

        def step():
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            opt.step()

        n = sum(shapes)
        stats = timer(a.device, step, 5, a.repeats)
        report(f"torch clip_grad_norm_ + AdamW fused=True, {layout}", a.device, n, len(shapes), stats, 32 * n)
        del params, opt
        if a.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
