"""Training-toolkit cases: schedules (sgd_wsd, adamw_clip_cosine), global-norm clipping, the
weight EMA (adamw_ema), muP (adamw_mup) and the Muon/AdamW policy (muon_adamw), off the shipped
golden cases' paths: other shapes, edge hyperparameters, 25-40 steps with gradients changing
scale by 1000x.  Each case is replayed on gdc's interpreter and CPU backend; it goes into
cases/ when both pass and into /tmp/toolkit-failures/ otherwise.

usage: python3 toolkit.py [optimizer...]     (needs target/debug/gdc: cargo build -p gdc-cli)
"""
import json, os, subprocess, sys
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import F32_PRODUCTS, GDC, ROOT, run_ref

HERE = os.path.dirname(os.path.abspath(__file__))
FAILED = "/tmp/toolkit-failures"

# the shapes of cases.py: wide, tall, square, [1, n], a bias vector
SHAPES = {"w": (6, 4), "wide": (3, 8), "tall": (9, 2), "sq": (4, 4), "row": (1, 7), "b": (5,)}


def make(opt, hyper, specs, steps, seed, tol=(2e-5, 2e-6), zero_steps=()):
    """specs: name -> shape, or name -> (shape, {"role": ..., "base_shape": ...})."""
    specs = {n: (s, {}) if isinstance(s[0], int) else s for n, s in specs.items()} if specs else {}
    shapes = {n: tuple(s) for n, (s, _) in specs.items()}
    meta = {n: m for n, (_, m) in specs.items()}
    rng = np.random.default_rng(seed)
    params = {n: rng.standard_normal(s) for n, s in shapes.items()}
    grads = []
    for t in range(steps):
        scale = 10.0 ** rng.uniform(-2, 1)
        g = {n: rng.standard_normal(s) * scale for n, s in shapes.items()}
        if t in zero_steps:
            for n in g:
                g[n] = np.where(rng.uniform(size=g[n].shape) < 0.7, 0.0, g[n])
        grads.append(g)
    # round inputs to float32 so the .gd replay sees the same values
    params = {n: v.astype(np.float32).astype(np.float64) for n, v in params.items()}
    grads = [{n: v.astype(np.float32).astype(np.float64) for n, v in g.items()} for g in grads]
    out = run_ref(opt, hyper, params, grads, meta)
    steps_json = []
    for g, o in zip(grads, out):
        s = {"grads": {n: v.ravel().tolist() for n, v in g.items()},
             "expected": {n: o[n].ravel().tolist() for n in params}}
        if "__state__" in o:
            s["expected_state"] = {k: v.ravel().tolist() for k, v in o["__state__"].items()}
        steps_json.append(s)
    return {
        "format": "gdc-golden-1",
        "optimizer": opt,
        "reference": "float64 transcription of the reference's code (tests/transcribed/ref.py)",
        "hyper": dict(hyper, **F32_PRODUCTS.get(opt, {})),
        "params": [dict({"name": n, "shape": list(v.shape)}, **meta[n], init=v.ravel().tolist())
                   for n, v in params.items()],
        "steps": steps_json,
        "tolerance": {"rel": tol[0], "abs": tol[1]},
    }


def global_norms(case):
    return [float(np.sqrt(sum(np.sum(np.square(v)) for v in s["grads"].values()))) for s in case["steps"]]


def all_cases():
    C = []

    def add(opt, name, hyper, specs=SHAPES, steps=30, seed=0, **kw):
        C.append((opt, f"{opt}-{name}", make(opt, hyper, specs, steps, seed, **kw)))

    # sgd_wsd: schedule read at count = step - 1; runs go past the end of the decay (lr 0)
    add("sgd_wsd", "warm0", dict(lr=0.02, warmup_steps=0, stable_steps=6, decay_steps=20, momentum=0.9),
        steps=30, seed=101)
    add("sgd_wsd", "warm1-stable0", dict(lr=0.03, warmup_steps=1, stable_steps=0, decay_steps=22, momentum=0.5),
        steps=28, seed=102, zero_steps=(2, 3))
    add("sgd_wsd", "long", dict(lr=0.01, warmup_steps=7, stable_steps=10, decay_steps=13, momentum=0.8),
        steps=36, seed=103)
    # optax's linear_schedule of 0 transition steps is its constant init value: lr stays on
    add("sgd_wsd", "decay0", dict(lr=0.01, warmup_steps=3, stable_steps=4, decay_steps=0, momentum=0.7),
        steps=25, seed=104)

    # adamw_clip_cosine: several parameters of different sizes in the global norm, a
    # max_grad_norm inside the range of the step norms (clips some steps, not others)
    many = {"emb": (13, 5), "w": (6, 4), "wide": (2, 9), "tall": (11, 3), "row": (1, 6), "b": (4,), "s": (1,)}
    add("adamw_clip_cosine", "warm0", dict(lr=0.02, warmup_steps=0, decay_steps=30, end_lr=0.0,
                                           max_grad_norm=5.0, beta1=0.9, beta2=0.95, eps=1e-6,
                                           weight_decay=0.1), specs=many, steps=30, seed=111)
    add("adamw_clip_cosine", "warm1-decay2", dict(lr=0.01, warmup_steps=1, decay_steps=2, end_lr=1e-3,
                                                  max_grad_norm=3.0, beta1=0.8, beta2=0.99, eps=1e-8,
                                                  weight_decay=0.05), steps=25, seed=112)
    add("adamw_clip_cosine", "past-decay", dict(lr=0.03, warmup_steps=6, decay_steps=20, end_lr=2e-3,
                                                max_grad_norm=8.0, beta1=0.9, beta2=0.999, eps=1e-8,
                                                weight_decay=0.2), specs=many, steps=36, seed=113)
    add("adamw_clip_cosine", "tiny-norm", dict(lr=0.01, warmup_steps=3, decay_steps=25, end_lr=1e-4,
                                               max_grad_norm=0.5, beta1=0.85, beta2=0.9, eps=1e-4,
                                               weight_decay=0.0), steps=28, seed=114, zero_steps=(4, 5))

    # adamw_ema: ema_decay 0 (ema = p), 0.5, and a long 0.99 run
    add("adamw_ema", "decay0", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, ema_decay=0.0),
        steps=25, seed=121)
    add("adamw_ema", "decay-half", dict(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.05,
                                        ema_decay=0.5), steps=30, seed=122)
    add("adamw_ema", "decay99-long", dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.01,
                                          ema_decay=0.99), steps=40, seed=123)

    # adamw_mup: base shapes equal to the shapes (width_mult 1); only one dimension differing
    # (vector-like: unchanged); both differing with several width multipliers (fan_in = shape[1])
    mh = dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)
    add("adamw_mup", "base-equal", mh, specs={
        "w": ((6, 4), {"role": "hidden", "base_shape": [6, 4]}),
        "wide": ((3, 8), {"role": "input", "base_shape": [3, 8]}),
        "row": ((1, 7), {"role": "output", "base_shape": [1, 7]}),
        "b": ((5,), {"role": "bias", "base_shape": [5]})}, steps=25, seed=131)
    add("adamw_mup", "one-dim", dict(mh, lr=0.01, weight_decay=0.3), specs={
        "in.w": ((12, 3), {"role": "input", "base_shape": [4, 3]}),
        "out.w": ((3, 12), {"role": "output", "base_shape": [3, 4]}),
        "row": ((1, 10), {"role": "hidden", "base_shape": [1, 5]}),
        "col": ((10, 1), {"role": "hidden", "base_shape": [5, 1]}),
        "b": ((12,), {"role": "bias", "base_shape": [4]})}, steps=30, seed=132)
    add("adamw_mup", "width-mults", dict(mh, beta1=0.8, beta2=0.95, eps=1e-6), specs={
        "h1": ((12, 8), {"role": "hidden", "base_shape": [4, 4]}),      # width_mult 2
        "h2": ((8, 12), {"role": "hidden", "base_shape": [4, 3]}),      # 4
        "tall": ((15, 2), {"role": "hidden", "base_shape": [5, 1]}),    # 2, tall
        "wide": ((2, 15), {"role": "hidden", "base_shape": [1, 5]}),    # 3, wide
        "sq": ((6, 6), {"role": "hidden", "base_shape": [6, 6]}),       # 1
        "in.w": ((8, 3), {"role": "input", "base_shape": [4, 3]}),      # vector-like
        "b": ((8,), {"role": "bias", "base_shape": [4]})}, steps=35, seed=133)

    # muon_adamw: Muon on role-hidden matrices only (tall, wide, several); hidden vectors and
    # every other role to AdamW
    ma = {"muon.lr": 0.02, "muon.momentum": 0.95, "muon.weight_decay": 0.01, "adamw.lr": 0.003,
          "adamw.beta1": 0.9, "adamw.beta2": 0.95, "adamw.eps": 1e-8, "adamw.weight_decay": 0.01}
    mtol = (2e-5, 2e-6)   # as the other cases (the shipped case allows 1e-4, 1e-5 for torch's float32 iteration)
    add("muon_adamw", "hidden-vectors", ma, specs={
        "embed": ((9, 4), {"role": "embedding"}),
        "w": ((4, 6), {"role": "hidden"}),
        "gain": ((6,), {"role": "hidden"}),
        "s": ((1,), {"role": "hidden"}),
        "b": ((6,), {"role": "bias"}),
        "head": ((3, 6), {"role": "output"})}, steps=30, seed=141, tol=mtol)
    add("muon_adamw", "tall-wide", dict(ma, **{"muon.lr": 0.05, "muon.weight_decay": 0.1, "adamw.lr": 0.01,
                                                "adamw.weight_decay": 0.1}), specs={
        "tall": ((12, 3), {"role": "hidden"}),
        "wide": ((3, 12), {"role": "hidden"}),
        "sq": ((5, 5), {"role": "hidden"}),
        "head": ((2, 12), {"role": "output"}),
        "b": ((3,), {"role": "bias"})}, steps=30, seed=142, tol=mtol)
    add("muon_adamw", "many-hidden", dict(ma, **{"muon.momentum": 0.8, "adamw.beta1": 0.8,
                                                  "adamw.beta2": 0.99, "adamw.eps": 1e-6}), specs={
        "embed": ((16, 6), {"role": "embedding"}),
        "q": ((6, 6), {"role": "hidden"}),
        "up": ((6, 14), {"role": "hidden"}),
        "down": ((14, 6), {"role": "hidden"}),
        "row": ((1, 6), {"role": "hidden"}),
        "col": ((6, 1), {"role": "hidden"}),
        "in": ((6, 3), {"role": "input"}),
        "b1": ((14,), {"role": "bias"}),
        "head": ((5, 6), {"role": "output"})}, steps=40, seed=143, tol=mtol, zero_steps=(7,))
    # a rank-3 hidden parameter is not a [rows, cols] matrix: AdamW
    add("muon_adamw", "hidden-rank3", ma, specs={
        "w": ((5, 4), {"role": "hidden"}),
        "experts": ((2, 3, 4), {"role": "hidden"}),
        "b": ((4,), {"role": "bias"})}, steps=25, seed=144, tol=mtol)
    return C


def replay_both(opt, name, case):
    """Replays on interp and cpu; keeps the case under cases/ when both pass."""
    os.makedirs(FAILED, exist_ok=True)
    tmp = os.path.join(FAILED, f"{name}.json")
    json.dump(case, open(tmp, "w"), separators=(",", ":"))
    res, ok = {}, True
    for backend in ("interp", "cpu"):
        r = subprocess.run([GDC, "replay", f"{ROOT}/examples/optimizers/{opt}.gd", tmp, "--backend", backend],
                           capture_output=True, text=True)
        lines = [l for l in r.stdout.splitlines() if l.startswith("step")]
        if lines:
            worst = max(lines, key=lambda l: float(l.split("worst ")[1].split()[0]))
            res[backend] = f"{float(worst.split('worst ')[1].split()[0]):.4f} ({worst.split(':')[0].strip()}," \
                           f" at {worst.split(' at ')[1]})"
        else:
            res[backend] = (r.stderr.strip() or r.stdout.strip())[:300]
        ok = ok and r.returncode == 0
        if r.returncode != 0:
            bad = [l for l in lines if float(l.split("worst ")[1].split()[0]) > 1 or "nan" in l]
            res[backend] += f" rc={r.returncode} first failing: {bad[0] if bad else '-'}"
    if ok:
        dest = os.path.join(HERE, "cases", f"{name}.json")
        os.replace(tmp, dest)
    print(f"{'PASS' if ok else 'FAIL'} {name:36s} interp {res['interp']:40s} cpu {res['cpu']}")
    return ok


if __name__ == "__main__":
    only = sys.argv[1:]
    for opt, name, case in all_cases():
        if only and opt not in only:
            continue
        if opt == "adamw_clip_cosine":
            norms = global_norms(case)
            mx = case["hyper"]["max_grad_norm"]
            print(f"     {name}: clipped on {sum(n >= mx for n in norms)} of {len(norms)} steps")
        replay_both(opt, name, case)
