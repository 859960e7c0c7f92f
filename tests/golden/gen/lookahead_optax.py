"""Writes tests/golden/lookahead_adam-optax.json: optax 0.2.8's lookahead(adam(...),
sync_period=4, slow_step_size=0.5) in float32 from synced parameters, 13 steps (three syncs,
and a step after the last), on a 7x5 matrix and a vector of 5; the parameters are optax's
`params.fast` and `expected_state` holds `slow.<param>` (`params.slow`). Needs jax and
optax==0.2.8: `python3 tests/golden/gen/lookahead_optax.py`."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from case import floats, write_case

assert optax.__version__ == "0.2.8", optax.__version__
HYPER = {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "sync_period": 4, "slow_step_size": 0.5}
SHAPES = {"w": [7, 5], "b": [5]}
STEPS = 13

rng = np.random.default_rng(7)
params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
fast = optax.adam(HYPER["lr"], b1=HYPER["beta1"], b2=HYPER["beta2"], eps=HYPER["eps"])
opt = optax.lookahead(fast, sync_period=HYPER["sync_period"], slow_step_size=HYPER["slow_step_size"])
p = optax.LookaheadParams.init_synced({k: jnp.asarray(v) for k, v in params.items()})
state = opt.init(p)
steps = []
for t in range(STEPS):
    scale = [1.0, 10.0, 0.1, 1.0, 100.0][t % 5]
    grads = {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}
    updates, state = opt.update({k: jnp.asarray(v) for k, v in grads.items()}, state, p)
    p = optax.apply_updates(p, updates)
    steps.append({
        "grads": {k: [float(x) for x in v.ravel()] for k, v in grads.items()},
        "expected": {k: floats(v) for k, v in p.fast.items()},
        "expected_state": {f"slow.{k}": floats(v) for k, v in p.slow.items()},
    })
write_case(
    "lookahead_adam-optax",
    "lookahead_adam",
    f"optax {optax.__version__} (jax {jax.__version__}), optax.lookahead(optax.adam)",
    HYPER,
    SHAPES,
    params,
    steps,
    {"rel": 2e-5, "abs": 2e-6},
)
