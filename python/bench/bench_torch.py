#!/usr/bin/env python3
"""`optimizer.step()` timed from Python: gdc.torch.Optimizer against torch.optim.AdamW
(fused=True and foreach=True), and the Rust runtime's own `gdc bench` for reference.

    python3 python/bench/bench_torch.py --json runs/bench_torch.json     # ~6-9 min on 2 cores

Every contender runs in a process of its own (this script re-invoked with --worker); the
contenders of a case are interleaved in rotated rounds (round r runs them in the order rotated
by r). Each worker sets torch.set_num_threads(--threads) (and gdc threads=--threads), builds
its parameters and fixed random gradients (set once, never zero), takes warm-up steps, then
times each of N steps with time.perf_counter and reports the median step. The parent keeps
each round's median per contender and reports the median over rounds, the min-max and the
IQR over rounds, and ratios of speed (fused median / contender median: > 1 means faster
than torch fused).

Cases:
  1. single  - AdamW on one 2^24-element float32 tensor: gdc, fused, foreach, and `gdc bench`
               (the CLI: the runtime without Python, so the binding's overhead reads off as
               gdc.torch minus gdc bench).
  2. gpt     - AdamW on a GPT-style set of 149 parameters (12 layers at d_model 512, vocab
               8192, context 1024, untied head; 46.7 M elements): gdc, fused, foreach.
  3. overhead- AdamW on 1, 10, 100, 300 parameters of 16 elements: the per-step time fitted
               as a + b * params (least squares over the four counts, per round), gdc and fused.

Disturbance: the machine is shared. Before each round of a case the parent waits (up to
--quiet-wait s) for other processes to use at most --disturbed-cores. Around each worker's timed loop the worker reads
/proc/stat and its own CPU time; CPU time that other processes used (plus steal) during the
loop, in cores, is reported as `other_cores`. A round of a case in which any contender saw
more than --disturbed-cores is run again (up to --max-reruns per case); the disturbed runs
are kept in the JSON under `discarded`.

Targets (PASS/MISS): single: gdc >= 0.97x fused speed and >= 3x foreach; gpt: gdc >= 1.1x
fused; overhead: a <= 20 us and b <= 1 us/param.
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
ADAMW_GD = os.path.join(ROOT, "examples", "optimizers", "adamw.gd")
SINGLE_NUMEL = 1 << 24
OVERHEAD_COUNTS = (1, 10, 100, 300)
OVERHEAD_NUMEL = 16
BYTES_PER_ELEMENT = 28  # AdamW's unavoidable traffic: reads p, g, m, v; writes p, m, v (float32)

CASES = {
    "single": ["gdc", "fused", "foreach", "gdc-bench"],
    "gpt": ["gdc", "fused", "foreach"],
    "overhead": ["gdc", "fused"],
}

TARGETS = {
    ("single", "fused"): 0.97,
    ("single", "foreach"): 3.0,
    ("gpt", "fused"): 1.1,
}
OVERHEAD_TARGET_A_US = 20.0
OVERHEAD_TARGET_B_US = 1.0


# ----- shapes ----------------------------------------------------------------------------


def gpt_shapes(layers=12, d=512, vocab=8192, ctx=1024):
    """(name, shape) of a GPT-2-style model: token and position embeddings, per layer two
    LayerNorms (weight, bias), qkv and proj, fc and fc2 (weights and biases), a final
    LayerNorm and an untied head."""
    shapes = [("wte", (vocab, d)), ("wpe", (ctx, d))]
    for i in range(layers):
        p = f"h.{i}."
        shapes += [
            (p + "ln_1.weight", (d,)),
            (p + "ln_1.bias", (d,)),
            (p + "attn.c_attn.weight", (3 * d, d)),
            (p + "attn.c_attn.bias", (3 * d,)),
            (p + "attn.c_proj.weight", (d, d)),
            (p + "attn.c_proj.bias", (d,)),
            (p + "ln_2.weight", (d,)),
            (p + "ln_2.bias", (d,)),
            (p + "mlp.c_fc.weight", (4 * d, d)),
            (p + "mlp.c_fc.bias", (4 * d,)),
            (p + "mlp.c_proj.weight", (d, 4 * d)),
            (p + "mlp.c_proj.bias", (d,)),
        ]
    shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,)), ("lm_head.weight", (vocab, d))]
    return shapes


def numel_of(shapes):
    n = 0
    for _, s in shapes:
        k = 1
        for x in s:
            k *= x
        n += k
    return n


# ----- worker side -----------------------------------------------------------------------


def _proc_stat():
    """(busy seconds over all CPUs excluding nothing of ours, steal seconds) from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq) / hz, steal / hz


class Disturbance:
    """CPU time used by other processes (and stolen by the hypervisor) during a span, in cores."""

    def __enter__(self):
        self.s0 = _proc_stat()
        self.r0 = os.times()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        s1 = _proc_stat()
        r1 = os.times()
        wall = time.perf_counter() - self.t0
        if self.s0 is None or s1 is None or wall <= 0:
            self.other_cores = None
            return False
        mine = (r1.user - self.r0.user) + (r1.system - self.r0.system)
        mine += (r1.children_user - self.r0.children_user) + (r1.children_system - self.r0.children_system)
        busy = s1[0] - self.s0[0]
        steal = s1[1] - self.s0[1]
        self.other_cores = max(0.0, busy - mine) / wall + steal / wall
        self.wall = wall
        return False


def _make_optimizer(contender, params, threads):
    import torch

    if contender == "gdc":
        import gdc.torch

        return gdc.torch.Optimizer(ADAMW_GD, params, threads=threads)
    if contender == "fused":
        return torch.optim.AdamW(params, fused=True)
    if contender == "foreach":
        return torch.optim.AdamW(params, foreach=True)
    raise SystemExit(f"unknown contender {contender}")


def _make_params(shapes, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    params = []
    for _, shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.02)
        p.grad = torch.randn(shape, generator=gen) * 1e-2  # fixed, set once, not zeros
        params.append(p)
    return params


def _time_steps(opt, warmup, steps):
    for _ in range(warmup):
        opt.step()
    times = []
    with Disturbance() as d:
        for _ in range(steps):
            t = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t)
    return times, d.other_cores


def _gdc_breakdown(opt, reps):
    """Times the pieces of gdc.torch.Optimizer.step separately: `_prepare` (the checks of
    every tensor and hyperparameter and the (address, length) lists; on gdc's fast path the
    native `prepare_torch`) and the native step alone (`Stepper.step` on region lists made
    once, its region check included). Reads private attributes of gdc.torch; returns
    {"error": ...} if they are not there."""
    try:
        clear = getattr(opt, "_clear_prepared", None)
        prep = []
        for _ in range(reps):
            t = time.perf_counter()
            work, keep = opt._prepare()
            prep.append(time.perf_counter() - t)
            if clear is not None:
                clear(work)
        lists = []
        for binding, params, grads, _hy in work:
            if params is None:  # the fast path kept its regions natively: make them in Python
                gi = binding.group_index
                params, grads = opt._regions(gi, opt.param_groups[gi], binding, [])
            lists.append((binding.stepper, params, grads))
        native = []
        for _ in range(reps):
            t = time.perf_counter()
            for stepper, params, grads in lists:
                stepper.step(params, grads)
            native.append(time.perf_counter() - t)
        return {"prepare_ms": statistics.median(prep) * 1e3, "native_ms": statistics.median(native) * 1e3}
    except Exception as e:  # noqa: BLE001 - a private API that may change
        return {"error": repr(e)}


def gdc_fingerprint():
    """What gdc this process imported (the package may be reinstalled while a run goes on)."""
    import hashlib

    import gdc
    import gdc.torch
    from gdc import _native

    h = hashlib.sha256()
    for f in (gdc.torch.__file__, _native.__file__):
        with open(f, "rb") as fh:
            h.update(fh.read())
    return {"version": gdc.__version__, "dir": os.path.dirname(gdc.__file__), "sha256": h.hexdigest()[:16]}


def worker(spec):
    import torch

    threads = spec["threads"]
    torch.set_num_threads(threads)
    contender = spec["contender"]
    case = spec["case"]
    out = {"case": case, "contender": contender, "torch_threads": torch.get_num_threads()}
    if contender == "gdc":
        out["gdc"] = gdc_fingerprint()
    if case in ("single", "gpt"):
        shapes = [("p", (SINGLE_NUMEL,))] if case == "single" else gpt_shapes()
        params = _make_params(shapes)
        opt = _make_optimizer(contender, params, threads)
        times, other = _time_steps(opt, spec["warmup"], spec["steps"])
        out.update(
            median_ms=statistics.median(times) * 1e3,
            min_ms=min(times) * 1e3,
            max_ms=max(times) * 1e3,
            samples_ms=[t * 1e3 for t in times],
            other_cores=other,
            params=len(params),
            numel=numel_of(shapes),
        )
        if contender == "gdc" and spec.get("breakdown"):
            out["breakdown"] = _gdc_breakdown(opt, max(5, spec["steps"] // 3))
    elif case == "overhead":
        opts = {}
        for n in OVERHEAD_COUNTS:
            params = _make_params([("p", (OVERHEAD_NUMEL,))] * n, seed=n)
            opts[n] = (params, _make_optimizer(contender, params, threads))
        for n, (_, opt) in opts.items():
            for _ in range(spec["warmup"]):
                opt.step()
        samples = {n: [] for n in OVERHEAD_COUNTS}
        blocks = spec["blocks"]
        per_block = spec["steps"]
        with Disturbance() as d:
            for b in range(blocks):
                order = list(OVERHEAD_COUNTS)
                order = order[b % len(order):] + order[: b % len(order)]
                for n in order:
                    opt = opts[n][1]
                    s = samples[n]
                    for _ in range(per_block):
                        t = time.perf_counter()
                        opt.step()
                        s.append(time.perf_counter() - t)
        med = {n: statistics.median(s) * 1e6 for n, s in samples.items()}
        a, b = fit_line(list(med), list(med.values()))
        out.update(
            median_us={str(n): v for n, v in med.items()},
            a_us=a,
            b_us=b,
            other_cores=d.other_cores,
        )
        if contender == "gdc" and spec.get("breakdown"):
            out["breakdown"] = {str(n): _gdc_breakdown(opts[n][1], 200) for n in OVERHEAD_COUNTS}
            for n in OVERHEAD_COUNTS:
                bd = out["breakdown"][str(n)]
                if "prepare_ms" in bd:
                    bd["prepare_us"] = bd.pop("prepare_ms") * 1e3
                    bd["native_us"] = bd.pop("native_ms") * 1e3
    else:
        raise SystemExit(f"unknown case {case}")
    print(json.dumps(out))


def check_equal(threads):
    """gdc and torch.optim.AdamW (fused and foreach) agree after a few steps on a small
    mixed set, so the contenders do the same work. Returns the largest relative difference."""
    import torch
    import gdc.torch

    torch.set_num_threads(threads)
    shapes = [("a", (257, 33)), ("b", (1000,)), ("c", (7,))]
    worst = 0.0
    ref = None
    for contender in ("foreach", "fused", "gdc"):
        params = _make_params(shapes, seed=3)
        opt = _make_optimizer(contender, params, threads)
        for _ in range(5):
            opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        if ref is None:
            ref = flat
        else:
            diff = ((flat - ref).abs() / ref.abs().clamp(min=1e-3)).max().item()
            worst = max(worst, diff)
    print(json.dumps({"max_rel_diff": worst}))


# ----- parent side -----------------------------------------------------------------------


def fit_line(xs, ys):
    """Least squares y = a + b x."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx
    return my - b * mx, b


def gdc_binary():
    exe = os.path.join(ROOT, "target", "release", "gdc")
    if os.path.exists(exe):
        return [exe]
    return ["cargo", "run", "--release", "-q", "-p", "gdc-cli", "--bin", "gdc", "--"]


def run_worker(spec, args):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["MKL_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"worker {spec['case']}/{spec['contender']} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_cli(args):
    steps, warmup = args.single_steps, args.single_warmup
    cmd = gdc_binary() + [
        "bench", ADAMW_GD, "--numel", str(SINGLE_NUMEL), "--threads", str(args.threads),
        "--warmup", str(warmup), "--repeats", str(steps), "--json",
    ]
    with Disturbance() as d:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"gdc bench failed ({p.returncode}):\n{p.stderr[-4000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    samples = [s * 1e3 for s in r.get("samples_s", [])]
    return {
        "case": "single",
        "contender": "gdc-bench",
        "median_ms": r["median_s"] * 1e3,
        "min_ms": r["min_s"] * 1e3,
        "max_ms": r["max_s"] * 1e3,
        "samples_ms": samples,
        # The whole process (allocation included) is watched here, not only the timed loop.
        "other_cores": d.other_cores,
        "numel": r.get("numel"),
        "gbps": r.get("gbps"),
        "bytes_per_step": r.get("bytes_per_step"),
    }


def spec_for(case, contender, args):
    spec = {"case": case, "contender": contender, "threads": args.threads, "breakdown": not args.no_breakdown}
    if case == "single":
        spec.update(warmup=args.single_warmup, steps=args.single_steps)
    elif case == "gpt":
        spec.update(warmup=args.gpt_warmup, steps=args.gpt_steps)
    else:
        spec.update(warmup=args.overhead_warmup, steps=args.overhead_steps, blocks=args.overhead_blocks)
    return spec


def run_round(case, order, args):
    results = {}
    for contender in order:
        if contender == "gdc-bench":
            results[contender] = run_cli(args)
        else:
            results[contender] = run_worker(spec_for(case, contender, args), args)
        oc = results[contender].get("other_cores")
        tag = "" if oc is None or oc <= args.disturbed_cores else "  (disturbed)"
        value = results[contender].get("median_ms")
        shown = f"{value:.3f} ms" if value is not None else f"a {results[contender]['a_us']:.2f} us, b {results[contender]['b_us']:.3f} us/param"
        oc_s = "n/a" if oc is None else f"{oc:.2f}"
        print(f"    {case:8s} {contender:10s} {shown:>34s}   other cores {oc_s}{tag}", file=sys.stderr, flush=True)
    return results


def wait_for_quiet(args):
    """Waits (up to --quiet-wait seconds) until other processes use at most --disturbed-cores
    over a 1 s window; returns the seconds waited and the last load seen."""
    waited = 0.0
    load = None
    while True:
        with Disturbance() as d:
            time.sleep(1.0)
        load = d.other_cores
        if load is None or load <= args.disturbed_cores or waited >= args.quiet_wait:
            return waited, load
        if waited == 0.0:
            print(f"    waiting for a quiet machine (other processes use {load:.2f} cores)", file=sys.stderr, flush=True)
        time.sleep(2.0)
        waited += 3.0


def disturbed(results, args):
    return any((r.get("other_cores") or 0.0) > args.disturbed_cores for r in results.values())


def quartiles(xs):
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize(values):
    q1, q3 = quartiles(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3, "rounds": values}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", metavar="PATH", help="write every figure (per round too) as JSON to PATH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cases", default="single,gpt,overhead")
    ap.add_argument("--single-warmup", type=int, default=5)
    ap.add_argument("--single-steps", type=int, default=25)
    ap.add_argument("--gpt-warmup", type=int, default=3)
    ap.add_argument("--gpt-steps", type=int, default=12)
    ap.add_argument("--overhead-warmup", type=int, default=50)
    ap.add_argument("--overhead-steps", type=int, default=100, help="timed steps per count per block")
    ap.add_argument("--overhead-blocks", type=int, default=4, help="blocks per worker, counts rotated per block")
    ap.add_argument("--disturbed-cores", type=float, default=0.25,
                    help="a run during whose timed loop other processes used more than this many cores is disturbed")
    ap.add_argument("--max-reruns", type=int, default=3, help="reruns of disturbed rounds allowed per case")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="before each round, wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--no-breakdown", action="store_true", help="skip timing gdc's _prepare and native step apart")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.check:
        check_equal(args.threads)
        return

    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c}: one of {', '.join(CASES)}")

    t_start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    chk = subprocess.run([sys.executable, os.path.abspath(__file__), "--check", "--threads", str(args.threads)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if chk.returncode != 0:
        raise SystemExit(f"equality check failed:\n{chk.stderr[-4000:]}")
    max_rel = json.loads(chk.stdout.strip().splitlines()[-1])["max_rel_diff"]
    print(f"gdc vs torch AdamW after 5 steps: max relative difference {max_rel:.2e}", file=sys.stderr, flush=True)

    kept = {c: [] for c in cases}
    discarded = {c: [] for c in cases}
    reruns = {c: 0 for c in cases}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for case in cases:
            contenders = CASES[case]
            k = r % len(contenders)
            order = contenders[k:] + contenders[:k]
            while True:
                waited, load = wait_for_quiet(args)
                if waited:
                    print(f"    waited {waited:.0f} s (load now {load:.2f} cores)", file=sys.stderr, flush=True)
                res = run_round(case, order, args)
                if disturbed(res, args) and reruns[case] < args.max_reruns:
                    reruns[case] += 1
                    discarded[case].append({"round": r, "order": order, "results": res})
                    print(f"    {case}: round disturbed, running it again ({reruns[case]}/{args.max_reruns})",
                          file=sys.stderr, flush=True)
                    continue
                kept[case].append({"round": r, "order": order, "results": res, "disturbed": disturbed(res, args)})
                break

    prints = sorted({json.dumps(rd["results"]["gdc"].get("gdc"), sort_keys=True)
                     for c in cases for rd in kept[c] if "gdc" in rd["results"]})
    gdc_builds = [json.loads(x) for x in prints]
    if len(gdc_builds) > 1:
        print("WARNING: gdc was reinstalled during the run; the rounds mix these builds: "
              + ", ".join(b["sha256"] for b in gdc_builds if b), file=sys.stderr, flush=True)

    summary = {}
    verdicts = []
    for case in cases:
        rounds = kept[case]
        s = summary[case] = {}
        if case in ("single", "gpt"):
            for c in CASES[case]:
                s[c] = summarize([rd["results"][c]["median_ms"] for rd in rounds])
            # Paired per-round speed ratios (the contenders of one round ran minutes apart at most).
            for c in CASES[case]:
                for base in ("fused", "foreach"):
                    if base == c:
                        continue
                    s[c][f"ratio_{base}"] = s[base]["median"] / s[c]["median"]
                    s[c][f"paired_ratio_{base}"] = summarize(
                        [rd["results"][base]["median_ms"] / rd["results"][c]["median_ms"] for rd in rounds])
            bd = [rd["results"]["gdc"].get("breakdown") for rd in rounds]
            bd = [b for b in bd if b and "prepare_ms" in b]
            if bd:
                s["gdc"]["breakdown"] = {
                    "prepare_ms": statistics.median(b["prepare_ms"] for b in bd),
                    "native_ms": statistics.median(b["native_ms"] for b in bd),
                }
        else:
            for c in CASES[case]:
                per = [rd["results"][c] for rd in rounds]
                s[c] = {
                    "a_us": summarize([p["a_us"] for p in per]),
                    "b_us": summarize([p["b_us"] for p in per]),
                    "median_us": {str(n): summarize([p["median_us"][str(n)] for p in per]) for n in OVERHEAD_COUNTS},
                }
                bd = [p.get("breakdown") for p in per]
                bd = [b for b in bd if b]
                if bd and all("prepare_us" in b[str(n)] for b in bd for n in OVERHEAD_COUNTS):
                    s[c]["breakdown"] = {
                        str(n): {
                            "prepare_us": statistics.median(b[str(n)]["prepare_us"] for b in bd),
                            "native_us": statistics.median(b[str(n)]["native_us"] for b in bd),
                        }
                        for n in OVERHEAD_COUNTS
                    }
                    xs = list(OVERHEAD_COUNTS)
                    for part in ("prepare_us", "native_us"):
                        a, b = fit_line(xs, [s[c]["breakdown"][str(n)][part] for n in xs])
                        s[c]["breakdown"][f"{part}_fit"] = {"a_us": a, "b_us": b}

    # ----- table ----------------------------------------------------------------------
    sys.stderr.flush()
    print()
    print(f"threads {args.threads}, {args.rounds} rounds kept per case (reruns of disturbed rounds: "
          + ", ".join(f"{c} {reruns[c]}" for c in cases) + f"), total {time.perf_counter() - t_start:.0f} s wall")
    print("speed ratio = other's median / this median (> 1: this contender is faster); spread = min-max over rounds, IQR")
    print(f"GB/s = {BYTES_PER_ELEMENT} bytes per element (AdamW reads p, g, m, v and writes p, m, v) / median step")
    numel = {"single": SINGLE_NUMEL, "gpt": numel_of(gpt_shapes())}
    print()
    header = (f"{'case':9s} {'contender':10s} {'median':>11s} {'spread (min-max)':>21s} {'IQR':>21s} {'vs fused':>9s}"
              f" {'vs foreach':>10s} {'GB/s':>6s}")
    print(header)
    print("-" * len(header))
    for case in cases:
        s = summary[case]
        if case in ("single", "gpt"):
            for c in CASES[case]:
                x = s[c]
                vf = "1.00" if c == "fused" else f"{x['ratio_fused']:.2f}x"
                vfe = ""
                if case == "single":
                    vfe = "1.00" if c == "foreach" else f"{x['ratio_foreach']:.2f}x"
                gbps = BYTES_PER_ELEMENT * numel[case] / (x["median"] * 1e-3) / 1e9
                print(f"{case:9s} {c:10s} {x['median']:8.2f} ms {x['min']:8.2f}-{x['max']:8.2f} ms"
                      f" {x['q1']:8.2f}-{x['q3']:8.2f} ms {vf:>9s} {vfe:>10s} {gbps:6.1f}")
        else:
            for n in OVERHEAD_COUNTS:
                for c in CASES[case]:
                    x = s[c]["median_us"][str(n)]
                    ratio = s["fused"]["median_us"][str(n)]["median"] / x["median"]
                    vf = "1.00" if c == "fused" else f"{ratio:.2f}x"
                    print(f"{case:9s} {c + ' n=' + str(n):10s} {x['median']:8.1f} us {x['min']:8.1f}-{x['max']:8.1f} us"
                          f" {x['q1']:8.1f}-{x['q3']:8.1f} us {vf:>9s}")
            for c in CASES[case]:
                a, b = s[c]["a_us"], s[c]["b_us"]
                print(f"{case:9s} {c + ' fit':10s} a = {a['median']:.2f} us (min-max {a['min']:.2f}-{a['max']:.2f}), "
                      f"b = {b['median']:.3f} us/param (min-max {b['min']:.3f}-{b['max']:.3f})")
    print()
    if "single" in summary:
        s = summary["single"]
        print(f"binding overhead (single): gdc.torch {s['gdc']['median']:.2f} ms vs gdc bench {s['gdc-bench']['median']:.2f} ms"
              f" = {s['gdc']['median'] - s['gdc-bench']['median']:+.2f} ms"
              f" (paired per-round ratio gdc-bench/gdc: "
              f"{statistics.median(rd['results']['gdc-bench']['median_ms'] / rd['results']['gdc']['median_ms'] for rd in kept['single']):.3f})")
    for case in ("single", "gpt"):
        if case in summary and "breakdown" in summary[case]["gdc"]:
            b = summary[case]["gdc"]["breakdown"]
            print(f"gdc.torch step pieces ({case}): _prepare {b['prepare_ms'] * 1e3:.1f} us, native Stepper.step {b['native_ms']:.3f} ms")
    if "overhead" in summary and "breakdown" in summary["overhead"]["gdc"]:
        b = summary["overhead"]["gdc"]["breakdown"]
        pf, nf = b["prepare_us_fit"], b["native_us_fit"]
        print(f"gdc.torch step pieces (overhead fit): _prepare a {pf['a_us']:.2f} us + b {pf['b_us']:.3f} us/param; "
              f"native Stepper.step a {nf['a_us']:.2f} us + b {nf['b_us']:.3f} us/param")
    print()
    print("targets:")
    for (case, base), want in TARGETS.items():
        if case not in summary:
            continue
        got = summary[case]["gdc"][f"ratio_{base}"]
        ok = got >= want
        verdicts.append({"case": case, "target": f"gdc >= {want}x {base}", "value": got, "pass": ok})
        pr = summary[case]["gdc"][f"paired_ratio_{base}"]
        print(f"  {'PASS' if ok else 'MISS'}  {case}: gdc {got:.3f}x {base} speed (target >= {want}x; "
              f"paired per-round ratios {pr['min']:.3f}-{pr['max']:.3f})")
    if "overhead" in summary:
        a = summary["overhead"]["gdc"]["a_us"]["median"]
        b = summary["overhead"]["gdc"]["b_us"]["median"]
        ok = a <= OVERHEAD_TARGET_A_US and b <= OVERHEAD_TARGET_B_US
        verdicts.append({"case": "overhead", "target": f"a <= {OVERHEAD_TARGET_A_US} us and b <= {OVERHEAD_TARGET_B_US} us/param",
                         "value": {"a_us": a, "b_us": b}, "pass": ok})
        print(f"  {'PASS' if ok else 'MISS'}  overhead: gdc a = {a:.2f} us (target <= {OVERHEAD_TARGET_A_US:g}), "
              f"b = {b:.3f} us/param (target <= {OVERHEAD_TARGET_B_US:g})")

    if args.json:
        import torch  # only for its version in the record

        try:
            cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except Exception:  # noqa: BLE001
            cpu = platform.processor()
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            commit = None
        try:
            import gdc

            gdc_version = gdc.__version__
        except Exception:  # noqa: BLE001
            gdc_version = None
        record = {
            "meta": {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cpu": cpu,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "gdc": gdc_version,
                "commit": commit,
                "args": {k: v for k, v in vars(args).items() if k not in ("worker", "check")},
                "wall_s": time.perf_counter() - t_start,
                "equality_max_rel_diff": max_rel,
                "gpt_params": len(gpt_shapes()),
                "gpt_numel": numel_of(gpt_shapes()),
                "reruns": reruns,
                "gdc_builds": gdc_builds,
            },
            "summary": summary,
            "targets": verdicts,
            "rounds": kept,
            "discarded": discarded,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
