"""torch.optim.Muon on the CPU (bench-matrix's side-by-side table) or a GPU (scripts/gpu-check).

Prints one JSON object per line: {"case": ..., "median_ms": ..., "min_ms": ..., "max_ms": ...}.
Cases: one matrix per --shapes entry, and "transformer" (--layers layers of 768x3072,
3072x768 and four 768x768 matrices). torch's Muon runs Newton-Schulz in bfloat16.
"""
import argparse
import json
import statistics
import time

import torch


def timed(params, repeats, device):
    opt = torch.optim.Muon(params, lr=0.02)
    gen = torch.Generator().manual_seed(7)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
    for _ in range(3 if device == "cuda" else 1):  # warm-up
        opt.step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            opt.step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
            continue
        t = time.perf_counter()
        opt.step()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def newton_schulz_f32(g, steps=5):
    """torch.optim.Muon's orthogonalisation with its coefficients and normalisation, in
    float32 (torch's own runs in bfloat16): the like-for-like reference for gdc's float32."""
    a, b, c = 3.4445, -4.775, 2.0315
    x = g.T if g.size(0) > g.size(1) else g
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.size(0) > g.size(1) else x


def timed_call(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def timed_f32_ns(shape, repeats):
    g = torch.randn(*shape) * 1e-2
    return timed_call(lambda: newton_schulz_f32(g), repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", default="1024x1024,4096x1024")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    if dev == "cpu":
        # The bf16 limit: torch's own bfloat16 GEMM (oneDNN, avx512_bf16) on 1024^3.
        a, b = (torch.randn(1024, 1024).bfloat16() for _ in range(2))
        print(json.dumps({"case": "bf16-gemm-1024", **timed_call(lambda: torch.mm(a, b), args.repeats)}), flush=True)
    for shape in filter(None, args.shapes.split(",")):
        r, c = (int(x) for x in shape.split("x"))
        params = [torch.nn.Parameter(torch.randn(r, c, device=dev) * 0.02)]
        print(json.dumps({"case": shape, **timed(params, args.repeats, dev)}), flush=True)
        if dev == "cpu":
            print(json.dumps({"case": shape + "-f32", **timed_f32_ns((r, c), args.repeats)}), flush=True)
    if args.layers > 0:
        shapes = [(768, 3072), (3072, 768)] + [(768, 768)] * 4
        params = [torch.nn.Parameter(torch.randn(*s, device=dev) * 0.02) for _ in range(args.layers) for s in shapes]
        print(json.dumps({"case": "transformer", **timed(params, max(1, args.repeats // 2), dev)}), flush=True)


if __name__ == "__main__":
    main()
