"""Check ref.py against the shipped golden cases, then generate non-default cases and replay
them with gdc.  usage: python3 run.py golden | python3 run.py cases [optimizer...]"""
import json, os, subprocess, sys
import numpy as np
sys.path.insert(0, os.path.dirname(__file__))
from ref import REFS, META_REFS

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GDC = ROOT + "/target/debug/gdc"


def load(path):
    d = json.load(open(path))
    params = {q["name"]: np.array(q["init"], dtype=np.float64).reshape(q["shape"]) for q in d["params"]}
    grads = [{k: np.array(v, dtype=np.float64).reshape(params[k].shape) for k, v in s["grads"].items()} for s in d["steps"]]
    return d, params, grads


def meta_of(d):
    """name -> {"role", "base_shape"} of a case's parameters (what muP and policies read)."""
    return {q["name"]: {k: q[k] for k in ("role", "base_shape") if k in q} for q in d["params"]}


def run_ref(opt, hyper, params, grads, meta=None):
    if opt in META_REFS:
        return REFS[opt](hyper, params, grads, meta=meta or {})
    return REFS[opt](hyper, params, grads)


def worst(d, out):
    tol = d["tolerance"]
    w = 0.0
    for s, o in zip(d["steps"], out):
        pairs = [(exp, o[k]) for k, exp in s["expected"].items()]
        pairs += [(exp, o["__state__"][k]) for k, exp in s.get("expected_state", {}).items()]
        for exp, a in pairs:
            e = np.array(exp)
            a = a.ravel()
            w = max(w, float(np.max(np.abs(a - e) / (tol["abs"] + tol["rel"] * np.abs(e)))))
    return w


def golden():
    for f in sorted(os.listdir(ROOT + "/tests/golden")):
        if not f.endswith(".json"):
            continue
        d, params, grads = load(ROOT + "/tests/golden/" + f)
        if d["optimizer"] not in REFS:
            continue
        out = run_ref(d["optimizer"], d["hyper"], params, grads, meta_of(d))
        print(f"{f:40s} ref worst {worst(d, out):.4f} of tolerance")


# The float64 references multiply in full precision: gdc's products run in float32 for them
# (muon.gd's Newton-Schulz defaults to bfloat16 operands, as torch.optim.Muon).
F32_PRODUCTS = {"muon": {"ns_precision": 24}, "muon_adamw": {"muon.ns_precision": 24}}


def make_case(opt, hyper, shapes, steps, seed, tol=(2e-5, 2e-6), zero_steps=()):
    rng = np.random.default_rng(seed)
    params = {n: rng.standard_normal(s) for n, s in shapes.items()}
    grads = []
    for t in range(steps):
        scale = 10.0 ** rng.uniform(-2, 1)
        g = {n: rng.standard_normal(s) * scale for n, s in shapes.items()}
        if t in zero_steps:
            for n in g:
                mask = rng.uniform(size=g[n].shape) < 0.7
                g[n] = np.where(mask, 0.0, g[n])
        grads.append(g)
    # round inputs to float32 so the .gd replay sees the same values
    params = {n: v.astype(np.float32).astype(np.float64) for n, v in params.items()}
    grads = [{n: v.astype(np.float32).astype(np.float64) for n, v in g.items()} for g in grads]
    out = REFS[opt](hyper, params, grads)
    return {
        "format": "gdc-golden-1",
        "optimizer": opt,
        "reference": "float64 transcription of the reference's single-tensor code (tests/transcribed/ref.py)",
        "hyper": dict(hyper, **F32_PRODUCTS.get(opt, {})),
        "params": [{"name": n, "shape": list(v.shape), "init": v.ravel().tolist()} for n, v in params.items()],
        "steps": [{"grads": {n: v.ravel().tolist() for n, v in g.items()},
                   "expected": {n: v.ravel().tolist() for n, v in o.items()}} for g, o in zip(grads, out)],
        "tolerance": {"rel": tol[0], "abs": tol[1]},
    }


def replay(opt, name, case):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases", f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(case, open(path, "w"), separators=(",", ":"))
    r = subprocess.run([GDC, "replay", f"{ROOT}/examples/optimizers/{opt}.gd", path], capture_output=True, text=True)
    last = [l for l in r.stdout.splitlines() if l.startswith("step")]
    worst_line = max(last, key=lambda l: float(l.split("worst ")[1].split()[0])) if last else r.stderr.strip()[:300]
    print(f"{'PASS' if r.returncode == 0 else 'FAIL'} rc={r.returncode} {name:55s} {worst_line}")
    return r.returncode


if __name__ == "__main__":
    if sys.argv[1] == "golden":
        golden()
    else:
        import cases
        only = sys.argv[2:]
        for opt, name, case in cases.all_cases(make_case):
            if only and opt not in only:
                continue
            replay(opt, name, case)
