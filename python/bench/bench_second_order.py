#!/usr/bin/env python3
"""Sophia-G's and K-FAC's steps timed side by side: gdc (`gdc bench`, the Rust runtime),
the machine's limit and the PyTorch code a user would run instead.

    python3 python/bench/bench_second_order.py --json runs/bench_second_order.json

Every contender runs in a process of its own; the contenders of a case are interleaved in
rotated rounds (round r starts at contender r), and each reports its mean step over N steps
(the amortised step: refreshes included in their share). The parent reports the median over
rounds, the min-max, and speed ratios (other / gdc time: > 1 means gdc is faster).

Cases:
  sophia - Sophia-G on one 2^24-element float32 tensor, 2 threads, the Hessian estimate
           refreshed every 10th step (train_sophiag.py's interval): gdc (`gdc bench
           sophia_g.gd --optional-every 10`), the hand-fused C loop
           (bench/reference/sophia.c at gcc -O3 -march=native -fno-math-errno -fopenmp), and
           Liuhong99/Sophia's SophiaG step as its code runs it on one tensor (update_hessian's
           `mul_`/`addcmul_`, then the step's `mul_`, `add_`, `abs`/`div`/`clamp`, `addcmul_`).
  kfac   - K-FAC on a transformer-like set (--layers blocks of d x 4d, 4d x d and four d x d,
           default d 256, 4 blocks: 24 matrices), statistics of --batch rows, tcov 10, tinv 10:
           gdc (`gdc bench kfac.gd`), alecwangcq/KFAC-Pytorch's per-step work written in torch
           on the same shapes (factor products every tcov, torch.linalg.eigh every tinv,
           the natural-gradient products, the KL clip, momentum), and torch's float32 GEMM
           on d x 4d by 4d x d products (the GEMM peak) for the FLOP-rate ratio.

Targets: sophia >= 0.95x the C loop's speed; kfac >= 60% of the GEMM peak (useful FLOPs:
the natural-gradient and factor products, decompositions excluded).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GDC = os.path.join(ROOT, "target", "release", "gdc")
SOPHIA_C = os.path.join(ROOT, "bench", "reference", "sophia.c")


def shapes(d, layers):
    return [s for _ in range(layers) for s in [(d, 4 * d), (4 * d, d), (d, d), (d, d), (d, d), (d, d)]]


def kfac_flops(sh, batch, tcov):
    """Useful FLOPs per amortised step: the natural gradient's four products every step, the
    factors' two symmetric products (one triangle each) every tcov steps."""
    total = 0.0
    for o, i in sh:
        total += 4 * o * i * (o + i)
        total += (batch * i * i + batch * o * o) / tcov
    return total


# ----- workers ------------------------------------------------------------------------------


def worker_torch_sophia(args):
    import torch

    torch.set_num_threads(args.threads)
    n = 1 << 24
    g = torch.rand(n) - 0.5
    h = torch.rand(n) - 0.5
    p = torch.rand(n)
    m = torch.zeros(n)
    hess = torch.zeros(n)
    lr, b1, b2, rho, wd, bs = 1e-4, 0.965, 0.99, 0.04, 0.1, 5120
    ts = []
    for s in range(5 + args.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            if s % 10 == 0:  # update_hessian()
                hess.mul_(b2).addcmul_(h, h, value=1 - b2)
            p.mul_(1 - lr * wd)
            m.mul_(b1).add_(g, alpha=1 - b1)
            ratio = (m.abs() / (rho * bs * hess + 1e-15)).clamp(None, 1)
            p.addcmul_(m.sign(), ratio, value=-lr)
        if s >= 5:
            ts.append(time.perf_counter() - t0)
    return {"mean_s": statistics.fmean(ts)}


def worker_torch_kfac(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sh = shapes(args.d, args.layers)
    ws = [torch.randn(o, i) * 0.02 for o, i in sh]
    gs = [torch.randn(o, i) * 0.01 for o, i in sh]
    acts = [torch.randn(args.batch, i) for _, i in sh]
    outs = [torch.randn(args.batch, o) * 0.01 for o, _ in sh]
    aa = [torch.eye(i) for _, i in sh]
    gg = [torch.eye(o) for o, _ in sh]
    eig = [None] * len(sh)
    bufs = [torch.zeros_like(w) for w in ws]
    lr, mom, sd, damping, kl = 0.01, 0.9, 0.95, 1e-3, 1e-3
    ts = []
    for k in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            for j in range(len(sh)):
                if k % args.tcov == 0:  # the hooks' compute_cov_a / compute_cov_g, update_running_stat
                    a, s, b = acts[j], outs[j], args.batch
                    aa[j].mul_(sd / (1 - sd)).add_(a.t() @ (a / b)).mul_(1 - sd)
                    gg[j].mul_(sd / (1 - sd)).add_(s.t() @ (s * b)).mul_(1 - sd)
                if k % args.tinv == 0:  # _update_inv
                    da, qa = torch.linalg.eigh(aa[j])
                    dg, qg = torch.linalg.eigh(gg[j])
                    eig[j] = (da * (da > 1e-10), qa, dg * (dg > 1e-10), qg)
            vs = []
            for j in range(len(sh)):  # _get_natural_grad
                da, qa, dg, qg = eig[j]
                v1 = qg.t() @ gs[j] @ qa
                v2 = v1 / (dg.unsqueeze(1) * da.unsqueeze(0) + damping)
                vs.append(qg @ v2 @ qa.t())
            vg = sum((v * g * lr**2).sum().item() for v, g in zip(vs, gs))  # _kl_clip_and_update_grad
            nu = min(1.0, (kl / vg) ** 0.5)
            for j in range(len(sh)):  # _step: SGD momentum
                bufs[j].mul_(mom).add_(vs[j], alpha=nu)
                ws[j].add_(bufs[j], alpha=-lr)
        if k >= args.warmup:
            ts.append(time.perf_counter() - t0)
    return {"mean_s": statistics.fmean(ts)}


def worker_gemm(args):
    import torch

    torch.set_num_threads(args.threads)
    a = torch.randn(args.d, 4 * args.d)
    b = torch.randn(4 * args.d, args.d)
    c = torch.randn(4 * args.d, 4 * args.d)
    for _ in range(3):
        a @ b
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
        c @ b
    dt = time.perf_counter() - t0
    flops = reps * (2 * args.d * 4 * args.d * args.d + 2 * 16 * args.d * args.d * args.d)
    return {"gflops": flops / dt / 1e9}


def run_gdc(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    j = json.loads(out)
    return {"mean_s": statistics.fmean(j["samples_s"]), "median_s": j["median_s"]}


def contender(case, name, args, tmp):
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    me = [sys.executable, os.path.abspath(__file__), "--worker"]
    passthrough = ["--threads", threads, "--steps", str(args.steps), "--d", str(args.d), "--layers", str(args.layers),
                   "--batch", str(args.batch), "--tcov", str(args.tcov), "--tinv", str(args.tinv)]
    if case == "sophia":
        if name == "gdc":
            return run_gdc([GDC, "bench", os.path.join(ROOT, "examples/optimizers/sophia_g.gd"), "--numel", str(1 << 24),
                            "--threads", threads, "--warmup", "5", "--repeats", str(args.steps), "--optional-every", "10",
                            "--json"])
        if name == "c":
            out = subprocess.run([os.path.join(tmp, "sophia"), "24", str(args.steps), "10"], check=True,
                                 capture_output=True, text=True, env=env).stdout
            return {"mean_s": json.loads(out)["mean_ms"] / 1e3}
    if case == "kfac" and name == "gdc":
        sizes = os.path.join(tmp, "kfac_shapes.txt")
        with open(sizes, "w") as f:
            f.write(" ".join(f"{o}x{i}" for o, i in shapes(args.d, args.layers)))
        return run_gdc([GDC, "bench", os.path.join(ROOT, "examples/optimizers/kfac.gd"), "--sizes", sizes, "--threads",
                        threads, "--warmup", str(args.warmup), "--repeats", str(args.steps), "--batch", str(args.batch),
                        "--set", f"tcov={args.tcov}", "--set", f"tinv={args.tinv}", "--json"])
    out = subprocess.run(me + [case, name] + passthrough, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("case", nargs="?")
    ap.add_argument("name", nargs="?")
    ap.add_argument("--cases", default="sophia,kfac")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--tcov", type=int, default=10)
    ap.add_argument("--tinv", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.worker:
        fn = {("sophia", "torch"): worker_torch_sophia, ("kfac", "torch"): worker_torch_kfac, ("kfac", "gemm"): worker_gemm}
        print(json.dumps(fn[(args.case, args.name)](args)))
        return
    tmp = os.path.join(ROOT, "target", "bench-second-order")
    os.makedirs(tmp, exist_ok=True)
    subprocess.run(["gcc", "-O3", "-march=native", "-fno-math-errno", "-fopenmp", SOPHIA_C, "-o",
                    os.path.join(tmp, "sophia"), "-lm"], check=True)
    results = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "cases": {}}
    contenders = {"sophia": ["gdc", "c", "torch"], "kfac": ["gdc", "torch", "gemm"]}
    for case in args.cases.split(","):
        names = contenders[case]
        rounds = {n: [] for n in names}
        for r in range(args.rounds):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                rounds[name].append(contender(case, name, args, tmp))
            print(f"{case} round {r + 1}: " + ", ".join(f"{n} {rounds[n][-1]}" for n in names), file=sys.stderr)
        summary = {}
        for n in names:
            key = "gflops" if n == "gemm" else "mean_s"
            xs = [x[key] for x in rounds[n]]
            summary[n] = {key: statistics.median(xs), "min": min(xs), "max": max(xs), "rounds": xs}
        if case == "sophia":
            g = summary["gdc"]["mean_s"]
            summary["gdc_speed_vs_c"] = summary["c"]["mean_s"] / g
            summary["gdc_speed_vs_torch"] = summary["torch"]["mean_s"] / g
            summary["target"] = ">= 0.95x the C loop"
            summary["verdict"] = "PASS" if summary["gdc_speed_vs_c"] >= 0.95 else "MISS"
        else:
            flops = kfac_flops(shapes(args.d, args.layers), args.batch, args.tcov)
            g = summary["gdc"]["mean_s"]
            summary["useful_gflop_per_step"] = flops / 1e9
            summary["gdc_gflops"] = flops / g / 1e9
            summary["torch_gflops"] = flops / summary["torch"]["mean_s"] / 1e9
            summary["gdc_of_peak"] = summary["gdc_gflops"] / summary["gemm"]["gflops"]
            summary["torch_of_peak"] = summary["torch_gflops"] / summary["gemm"]["gflops"]
            summary["gdc_speed_vs_torch"] = summary["torch"]["mean_s"] / g
            summary["target"] = ">= 60% of the GEMM peak"
            summary["verdict"] = "PASS" if summary["gdc_of_peak"] >= 0.6 else "MISS"
        results["cases"][case] = summary
        print(json.dumps({case: summary}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
