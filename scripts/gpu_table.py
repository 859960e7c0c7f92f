#!/usr/bin/env python3
"""The last thing scripts/gpu-check prints: one short table of gdc's GPU steps beside the
device-to-device copy and PyTorch, from the JSON files in OUT. Usage:
gpu_table.py OUT GOLDEN VERIFY RUNTIME_TEST (the last three as the check counted them)."""
import json, os, sys

out, golden, verify, runtime = sys.argv[1:5]


def jsonl(name, key):
    """The JSON objects of OUT/name, one per line, by their `key` field ({} if absent)."""
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return {}
    rows = (json.loads(line) for line in open(path) if line.strip().startswith("{"))
    return {r[key]: r for r in rows}


torch = jsonl("torch.jsonl", "what")


def gdc(name, layout):
    path = os.path.join(out, f"gdc-{name}-{layout}.json")
    try:
        return json.loads(open(path).read())
    except (OSError, ValueError):
        return None


def find(prefix, layout):
    for what, r in torch.items():
        if what.startswith(prefix) and (("one tensor" in what) == (layout == "one")):
            return r
    return None


gpu = open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else "?"
copy = torch.get("copy (bandwidth limit)")
print(f"GPU: {gpu}")
print(f"correctness: golden cases {golden} within tolerance; examples vs interpreter {verify}; runtime GPU test {runtime}")
if copy:
    print(f"torch device copy: {copy['gbps']:.0f} GB/s ({copy['median_ms']:.3f} ms for {copy['numel']} floats)")
print()
print("| step | tensors | gdc ms | gdc GB/s | % of copy | torch ms (which) | gdc speed-up |")
print("|---|---|---|---|---|---|---|")
rows = [
    ("adamw", "torch AdamW fused=True"),
    ("adamw", "torch AdamW foreach=True"),
    ("lion", "torch Lion foreach"),
    ("adafactor", "torch Adafactor foreach=True"),
    ("adamw_clip_cosine", "torch clip_grad_norm_ + AdamW fused=True"),
]
for layout in ("one", "mixed"):
    for name, ref in rows:
        g = gdc(name, layout)
        t = find(ref, layout)
        if g is None:
            print(f"| {name} | {layout} | failed | | | | |")
            continue
        ms = g["median_s"] * 1e3
        pct = 100 * g["fraction_of_copy"]
        tms = f"{t['median_ms']:.3f} ({ref.replace('torch ', '')})" if t else "n/a"
        speed = f"{t['median_ms'] / ms:.2f}x" if t else ""
        print(f"| {name} | {g['tensors']} | {ms:.3f} | {g['gbps']:.0f} | {pct:.1f}% | {tms} | {speed} |")

muon = jsonl("torch-muon.jsonl", "case")
print()
print("| Muon step | tensors | gdc ms | torch.optim.Muon ms | gdc speed-up |")
print("|---|---|---|---|---|")
for case in ("1024x1024", "4096x1024", "transformer"):
    g = gdc("muon", case)
    t = muon.get(case)
    if g is None:
        print(f"| {case} | | failed | | |")
        continue
    ms = g["median_s"] * 1e3
    tms = f"{t['median_ms']:.3f}" if t else "n/a"
    speed = f"{t['median_ms'] / ms:.2f}x" if t else ""
    print(f"| {case} | {g['tensors']} | {ms:.3f} | {tms} | {speed} |")
