"""Writes tests/golden/sm3-optax.json: optax 0.2.8's sm3 (scale_by_sm3(momentum), then -lr)
run in float32 on a 7x5 matrix, a [1, 6] row, a [6, 1] column, a vector of 5, a [3, 4, 5] tensor
and a [2, 1, 3, 2] tensor (one accumulator per index of each axis: gdc's `[axes]` state), for 12 steps
whose gradients change scale by up to 1000x and are zero on some elements (SM3's where(acc >
0, ...) branch). Needs jax and optax==0.2.8: `python3 tests/golden/gen/sm3_optax.py`."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from case import floats, write_case

assert optax.__version__ == "0.2.8", optax.__version__
HYPER = {"lr": 0.05, "momentum": 0.9, "eps": 1e-8}
SHAPES = {"w": [7, 5], "row": [1, 6], "col": [6, 1], "b": [5], "t": [3, 4, 5], "k": [2, 1, 3, 2]}
STEPS = 12

rng = np.random.default_rng(21)
params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
opt = optax.sm3(HYPER["lr"], momentum=HYPER["momentum"])
state = opt.init({k: jnp.asarray(v) for k, v in params.items()})
p = {k: jnp.asarray(v) for k, v in params.items()}
steps = []
for t in range(STEPS):
    scale = [1.0, 10.0, 0.01, 1.0, 100.0, 0.1][t % 6]
    grads = {}
    for k, s in SHAPES.items():
        g = (rng.standard_normal(s) * scale).astype(np.float32)
        if t % 4 == 2:
            g[rng.random(s) < 0.6] = 0.0  # mostly zero: untouched accumulators stay 0
        grads[k] = g
    updates, state = opt.update({k: jnp.asarray(v) for k, v in grads.items()}, state, p)
    p = optax.apply_updates(p, updates)
    steps.append({
        "grads": {k: [float(x) for x in v.ravel()] for k, v in grads.items()},
        "expected": {k: floats(v) for k, v in p.items()},
    })
write_case(
    "sm3-optax",
    "sm3",
    f"optax {optax.__version__} (jax {jax.__version__}), optax.sm3",
    HYPER,
    SHAPES,
    params,
    steps,
    {"rel": 2e-5, "abs": 2e-6},
)
