"""Writes tests/golden/grafted_shampoo-distributed.json: facebookresearch/optimizers'
DistributedShampoo (single device) with Adam grafting, in float32, 12 steps on a 5x5 matrix,
a 6x3 matrix (rank-deficient row statistics) and a vector of 4: betas (0.9, 1.0) (the
statistics are sums), epsilon 1e-2 added to their eigenvalues
(PerturbationConfig(perturb_before_computation=False)), max_preconditioner_dim 8 (no
dimension is merged or blocked), AdamPreconditionerConfig(beta2=0.999, epsilon=1e-8),
precondition_frequency 1, bias correction on.

Their code is not copied here: get the repository and give the folder that holds its
`distributed_shampoo` package, `git clone https://github.com/facebookresearch/optimizers
/tmp/x` then `DISTRIBUTED_SHAMPOO=/tmp/x python3 tests/golden/gen/grafted_shampoo.py` (needs
torch; the case in this repository was made from commit
f60660661194de26d3ee78bae6d15820ff8e583d)."""
import os
import sys
import warnings

import numpy as np
import torch
from case import floats, write_case

sys.path.insert(0, os.environ["DISTRIBUTED_SHAMPOO"])
from distributed_shampoo import (  # noqa: E402
    AdamPreconditionerConfig,
    DistributedShampoo,
    EigenConfig,
    PerturbationConfig,
    RootInvShampooPreconditionerConfig,
)

warnings.simplefilter("ignore")
HYPER = {"lr": 0.01, "beta1": 0.9, "shampoo.eps": 1e-2, "shampoo.precondition_frequency": 1,
         "adam.beta2": 0.999, "adam.eps": 1e-8}
SHAPES = {"w": [5, 5], "u": [6, 3], "b": [4]}
STEPS = 12

rng = np.random.default_rng(13)
init = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
opt = DistributedShampoo(
    list(params.values()),
    lr=HYPER["lr"],
    betas=(HYPER["beta1"], 1.0),
    epsilon=HYPER["shampoo.eps"],
    max_preconditioner_dim=8,
    precondition_frequency=HYPER["shampoo.precondition_frequency"],
    grafting_config=AdamPreconditionerConfig(beta2=HYPER["adam.beta2"], epsilon=HYPER["adam.eps"]),
    preconditioner_config=RootInvShampooPreconditionerConfig(
        amortized_computation_config=EigenConfig(
            rank_deficient_stability_config=PerturbationConfig(perturb_before_computation=False))),
)
steps = []
for t in range(STEPS):
    scale = [1.0, 10.0, 0.1, 1.0, 100.0][t % 5]
    grads = {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}
    for k, p in params.items():
        p.grad = torch.tensor(grads[k])
    opt.step()
    steps.append({
        "grads": {k: [float(x) for x in v.ravel()] for k, v in grads.items()},
        "expected": {k: floats(p.detach().numpy()) for k, p in params.items()},
    })
write_case(
    "grafted_shampoo-distributed",
    "grafted_shampoo",
    f"facebookresearch/optimizers DistributedShampoo (Adam grafting), torch {torch.__version__}",
    HYPER,
    SHAPES,
    init,
    steps,
    {"rel": 2e-5, "abs": 2e-6},
)
