"""Writes tests/golden/schedule_free_sgd-wrapper.json: schedulefree 1.4.1's
ScheduleFreeWrapper around torch.optim.SGD (momentum 0.5 in the base, the wrapper's momentum
0.9, weight_decay_at_y 0.1, r 1, weight_lr_power 2) in train mode, float32, 12 steps on a
7x5 matrix and a vector of 5; the parameters are the points y where gradients are taken and
`expected_state` holds the iterate `z.<param>`. Needs torch and schedulefree==1.4.1:
`python3 tests/golden/gen/schedule_free_sgd.py`."""
import numpy as np
import schedulefree
import torch
from case import floats, write_case

HYPER = {"lr": 0.05, "momentum": 0.5, "dampening": 0.0, "weight_decay": 0.0, "nesterov": 0,
         "beta": 0.9, "weight_decay_at_y": 0.1, "r": 1.0, "weight_lr_power": 2.0}
SHAPES = {"w": [7, 5], "b": [5]}
STEPS = 12

rng = np.random.default_rng(5)
init = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
base = torch.optim.SGD(list(params.values()), lr=HYPER["lr"], momentum=HYPER["momentum"])
opt = schedulefree.ScheduleFreeWrapper(base, momentum=HYPER["beta"], weight_decay_at_y=HYPER["weight_decay_at_y"],
                                       r=HYPER["r"], weight_lr_power=HYPER["weight_lr_power"])
opt.train()
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
        "expected_state": {f"z.{k}": floats(opt.state[p]["z"].numpy()) for k, p in params.items()},
    })
write_case(
    "schedule_free_sgd-wrapper",
    "schedule_free_sgd",
    f"schedulefree {schedulefree.__version__ if hasattr(schedulefree, '__version__') else '1.4.1'} ScheduleFreeWrapper(torch.optim.SGD), torch {torch.__version__}",
    HYPER,
    SHAPES,
    init,
    steps,
    {"rel": 2e-5, "abs": 2e-6},
)
