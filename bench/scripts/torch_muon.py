"""torch.optim.Muon on the CPU, for bench-matrix's side-by-side table.

Prints one JSON object per line: {"case": ..., "median_ms": ..., "min_ms": ..., "max_ms": ...}.
Cases: one matrix per --shapes entry, and "transformer" (--layers layers of 768x3072,
3072x768 and four 768x768 matrices). torch's Muon runs Newton-Schulz in bfloat16.
"""
import argparse
import json
import statistics
import time

import torch


def timed(params, repeats):
    opt = torch.optim.Muon(params, lr=0.02)
    gen = torch.Generator().manual_seed(7)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    opt.step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        opt.step()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", default="1024x1024,4096x1024")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for shape in args.shapes.split(","):
        r, c = (int(x) for x in shape.split("x"))
        params = [torch.nn.Parameter(torch.randn(r, c) * 0.02)]
        print(json.dumps({"case": shape, **timed(params, args.repeats)}), flush=True)
    if args.layers > 0:
        shapes = [(768, 3072), (3072, 768)] + [(768, 768)] * 4
        params = [torch.nn.Parameter(torch.randn(*s) * 0.02) for _ in range(args.layers) for s in shapes]
        print(json.dumps({"case": "transformer", **timed(params, max(1, args.repeats // 2))}), flush=True)


if __name__ == "__main__":
    main()
