#!/usr/bin/env python3
"""Adafactor's factored matrix step timed side by side on one 4096x4096 matrix: gdc
(`gdc bench adafactor.gd`, the Rust runtime), the hand-written C step (the machine's limit:
bench/reference/adafactor.c at gcc -O3 -march=native -fno-math-errno -fopenmp) and
torch.optim.Adafactor (foreach=False, torch's CPU default, and foreach=True), each on 1 and
2 threads.

    python3 python/bench/bench_factored.py --json runs/bench_factored.json   # ~3 min

Every contender runs in a process of its own; contenders are interleaved in rotated rounds
(round r starts at contender r) and each reports the median of its timed steps. The parent
reports the median over rounds, the min-max over rounds, speed ratios (other / gdc time: > 1
means gdc is faster) and gdc's 2-thread speed-up over its own 1-thread step.

Targets (issue 20): gdc at least 1.5x torch's speed, and 2 threads at least 1.7x 1 thread.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GDC = os.path.join(ROOT, "target", "release", "gdc")
C_SRC = os.path.join(ROOT, "bench", "reference", "adafactor.c")
ROWS = COLS = 4096


def contender(name, args, tmp):
    kind, threads = name.rsplit("-", 1)
    t = threads.rstrip("t")
    env = dict(os.environ, OMP_NUM_THREADS=t)
    if kind == "gdc":
        out = subprocess.run([GDC, "bench", os.path.join(ROOT, "examples/optimizers/adafactor.gd"), "--shape",
                              f"{ROWS}x{COLS}", "--threads", t, "--warmup", "3", "--repeats", str(args.steps), "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)["median_s"] * 1e3
    if kind == "c":
        out = subprocess.run([os.path.join(tmp, "adafactor"), str(ROWS), str(COLS), str(args.steps)], check=True,
                             capture_output=True, text=True, env=env).stdout
        return json.loads(out)["med_ms"]
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, "--threads", t, "--steps",
                          str(args.steps)], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def worker(kind, threads, steps):
    """torch.optim.Adafactor's step on the matrix (defaults: lr 1e-2, beta2_decay -0.8), each of
    `steps` steps timed after 3 warm-up steps; prints the median in ms."""
    import time
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(ROWS, COLS) * 0.02)
    p.grad = torch.randn(ROWS, COLS) * 1e-3
    opt = torch.optim.Adafactor([p], foreach=(kind == "torch_foreach"))
    ts = []
    for s in range(3 + steps):
        t0 = time.perf_counter()
        opt.step()
        if s >= 3:
            ts.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"impl": f"torch {torch.__version__} {kind}", "median_ms": statistics.median(ts)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.threads, args.steps)
    names = ["gdc-1t", "gdc-2t", "c-1t", "c-2t", "torch-1t", "torch-2t", "torch_foreach-2t"]
    runs = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["gcc", "-O3", "-march=native", "-fno-math-errno", "-fopenmp", C_SRC, "-o",
                        os.path.join(tmp, "adafactor"), "-lm"], check=True)
        for r in range(args.rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                runs[n].append(contender(n, args, tmp))
            print(f"round {r + 1}: " + ", ".join(f"{n} {runs[n][-1]:.1f}" for n in names), file=sys.stderr)
    med = {n: statistics.median(v) for n, v in runs.items()}
    print(f"Adafactor {ROWS}x{COLS}, medians of {args.rounds} rounds (min-max), ms; speed = other / gdc at the same threads")
    for n in names:
        same = "gdc-" + n.rsplit("-", 1)[1]
        print(f"  {n:18s} {med[n]:8.2f} ({min(runs[n]):.2f}-{max(runs[n]):.2f})  gdc speed x{med[n] / med[same]:.2f}")
    scale = med["gdc-1t"] / med["gdc-2t"]
    vs_torch = med["torch-2t"] / med["gdc-2t"]
    print(f"gdc 2 threads / 1 thread: x{scale:.2f} (target 1.7: {'PASS' if scale >= 1.7 else 'MISS'})")
    print(f"gdc vs torch, 2 threads: x{vs_torch:.2f} (target 1.5: {'PASS' if vs_torch >= 1.5 else 'MISS'})")
    print(f"gdc vs the C step, 2 threads: x{med['c-2t'] / med['gdc-2t']:.2f} of its speed")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "rounds": runs, "medians": med}, f, indent=1)


if __name__ == "__main__":
    main()
