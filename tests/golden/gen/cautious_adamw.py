"""Writes tests/golden/cautious_adamw-authors.json: the Cautious Optimizers authors' C-AdamW
(kyleliang919/C-Optim, c_adamw.py, AdamW with foreach=False: the per-parameter loop) in float32,
12 steps on a 7x5 matrix, a 1x6 row and a vector of 5, with gradients whose sign often
disagrees with the moving average (so the mask drops many elements) and scales 0.01-100.

Their code is not copied here: clone it as a folder named C_Optim and give its parent,
`git clone https://github.com/kyleliang919/C-Optim /tmp/x/C_Optim` then
`C_OPTIM_PARENT=/tmp/x python3 tests/golden/gen/cautious_adamw.py` (needs torch; the case in
this repository was made from commit 2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3)."""
import os
import sys
import warnings

import numpy as np
import torch
from case import floats, write_case

sys.path.insert(0, os.environ["C_OPTIM_PARENT"])
from C_Optim import c_adamw  # noqa: E402

warnings.simplefilter("ignore")
HYPER = {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1}
SHAPES = {"w": [7, 5], "r": [1, 6], "b": [5]}
STEPS = 12

rng = np.random.default_rng(11)
init = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
opt = c_adamw.AdamW(
    list(params.values()),
    lr=HYPER["lr"],
    betas=(HYPER["beta1"], HYPER["beta2"]),
    eps=HYPER["eps"],
    weight_decay=HYPER["weight_decay"],
    foreach=False,
    no_deprecation_warning=True,
)
steps = []
for t in range(STEPS):
    scale = [1.0, 10.0, 0.01, 1.0, 100.0, 0.1][t % 6]
    # Every third step flips most signs, so the mask keeps few elements.
    sign = -1.0 if t % 3 == 2 else 1.0
    grads = {k: (sign * np.abs(rng.standard_normal(s)) * scale + 0.3 * rng.standard_normal(s) * scale).astype(np.float32)
             for k, s in SHAPES.items()}
    for k, p in params.items():
        p.grad = torch.tensor(grads[k])
    opt.step()
    steps.append({
        "grads": {k: [float(x) for x in v.ravel()] for k, v in grads.items()},
        "expected": {k: floats(p.detach().numpy()) for k, p in params.items()},
    })
write_case(
    "cautious_adamw-authors",
    "cautious_adamw",
    f"kyleliang919/C-Optim c_adamw.AdamW (foreach=False), torch {torch.__version__}",
    HYPER,
    SHAPES,
    init,
    steps,
    {"rel": 2e-5, "abs": 2e-6},
)
