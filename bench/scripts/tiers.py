"""The CPU's elementwise step on both of gdc's tiers, against the C loop and PyTorch.

For each configuration (optimizer, elements, threads), every contender runs in its own
process, in rounds whose order rotates (A B C D, then B C D A, ...); the table gives each
contender's median over the rounds of its per-process median, the range over rounds, and
the ratios of speeds (time of the other / time of gdc) per round:

- gdc LLVM: `gdc bench` of a `gdc build` artifact (the LLVM tier: AVX2 or AVX-512 code);
- gdc Cranelift: the same artifact with GDC_NO_NATIVE=1 (128-bit SSE);
  (`adamw_c` is bench/scripts/adamw_c.gd: AdamW with the C loop's arithmetic);
- C: ../shared/tools/reference/opt.c, `gcc -O3 -march=native -fno-math-errno -fopenmp`
  (AdamW, Lion, SGD with momentum only; its arithmetic is its own, see the note it prints);
- torch: bench/scripts/torch_elementwise.py (fused where torch has it).

Run from the repository root after `cargo build --release -p gdc-cli`:
    python3 bench/scripts/tiers.py [--rounds 5] [--only adamw]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--only", default=None)
ap.add_argument("--reference", default=os.path.join(ROOT, "..", "shared", "tools", "reference"))
ap.add_argument("--work", default="/tmp/gdc-tiers")
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
GDC = os.path.join(ROOT, "target", "release", "gdc")
C_KIND = {"adamw": "adamw", "adamw_c": "adamw", "lion": "lion", "sgd": "sgdm"}
TORCH = {"adamw_c": "adamw"}
SETS = {"sgd": ["--set", "momentum=0.9"]}
CONFIGS = [(o, n, t) for o in ["adamw", "adamw_c", "lion", "sgd", "adagrad", "rmsprop"] for (n, t) in [(20, 2), (24, 1)]]
if a.only:
    CONFIGS = [c for c in CONFIGS if c[0] == a.only]

c_bin = os.path.join(a.work, "opt")
c_src = os.path.join(a.reference, "opt.c")
have_c = os.path.exists(c_src)
if have_c:
    subprocess.run(["gcc", "-O3", "-march=native", "-fno-math-errno", "-fopenmp", c_src, "-o", c_bin, "-lm"], check=True)
for opt in sorted({c[0] for c in CONFIGS}):
    src = os.path.join(ROOT, "examples", "optimizers", f"{opt}.gd")
    if not os.path.exists(src):
        src = os.path.join(ROOT, "bench", "scripts", f"{opt}.gd")
    subprocess.run([GDC, "build", src, "-o",
                    os.path.join(a.work, f"{opt}.gdo")], check=True, stdout=subprocess.DEVNULL)


def contenders(opt, log2n, threads):
    n = 1 << log2n
    repeats = 100 if log2n <= 20 else 15
    gdo = os.path.join(a.work, f"{opt}.gdo")
    bench = [GDC, "bench", gdo, "--numel", str(n), "--threads", str(threads), "--repeats", str(repeats), "--json"]
    bench += SETS.get(opt, [])
    out = {
        "gdc LLVM": (bench, {}, lambda j: j["median_s"] * 1e3, "cpu_tier"),
        "gdc Cranelift": (bench, {"GDC_NO_NATIVE": "1"}, lambda j: j["median_s"] * 1e3, "cpu_tier"),
        "torch": ([sys.executable, os.path.join(ROOT, "bench", "scripts", "torch_elementwise.py"), TORCH.get(opt, opt), str(threads),
                   "--numel", str(n), "--repeats", str(repeats)], {}, lambda j: j["median_ms"], "impl"),
    }
    if have_c and opt in C_KIND:
        out["C"] = ([c_bin, C_KIND[opt], str(log2n), str(repeats)], {"OMP_NUM_THREADS": str(threads)},
                    lambda j: j["med_ms"], "impl")
    return out


print(f"# {a.rounds} rounds; machine: {os.uname().nodename}; CPU flags avx512f: "
      f"{'avx512f' in open('/proc/cpuinfo').read()}")
for opt, log2n, threads in CONFIGS:
    cs = contenders(opt, log2n, threads)
    names = list(cs)
    times = {k: [] for k in names}
    impl = {}
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            cmd, env, get, label = cs[k]
            res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            j = json.loads(res.stdout.strip().splitlines()[-1])
            times[k].append(get(j))
            impl[k] = j.get(label, "")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n## {opt} 2^{log2n}, {threads} thread(s)")
    print("| contender | median ms | range over rounds | gdc LLVM's speed ÷ its (per round) |")
    print("|---|---|---|---|")
    for k in names:
        ratios = [o / g for o, g in zip(times[k], times["gdc LLVM"])]
        print(f"| {k} ({impl[k]}) | {med[k]:.3f} | {min(times[k]):.3f}–{max(times[k]):.3f} | "
              f"{statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) |")
