"""Writes tests/golden/prodigy-optax.json: optax 0.2.8's contrib.prodigy on a 7x5 matrix, a
vector of 5 and a [2, 3, 4] tensor, for 25 steps of a noisy quadratic (the gradient points
back towards a target, so Prodigy's step size estimate d grows from estim_lr0 = 1e-2 to about
1.19) with decoupled weight decay. d and the numerator are one scalar for all three
parameters: a gdc update that saw only its own parameter would diverge at the first step.

optax runs in float64 (jax_enable_x64) on float32 inputs: Prodigy's d is computed from
<g, p0 - p>, and while p has barely moved from p0, float32 rounding of p0 - p is a large
part of it, which the growth of d then amplifies (optax in float32 and optax in float64
differ by 75x this case's tolerance after 25 steps at the default estim_lr0 = 1e-6). The
float64 run is optax's arithmetic without that rounding; estim_lr0 = 1e-2 and a tolerance 2.5x
the usual (rel 5e-5, abs 5e-6) keep gdc's float32 backends within it: the same amplification
moves a float32 run by up to 0.84 of the usual tolerance. Needs jax and optax==0.2.8:
`python3 tests/golden/gen/prodigy_optax.py`."""
import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import optax
from case import floats, write_case

assert optax.__version__ == "0.2.8", optax.__version__
HYPER = {"lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "estim_lr0": 1e-2, "estim_lr_coef": 1.0,
         "weight_decay": 0.01}
SHAPES = {"w": [7, 5], "b": [5], "t": [2, 3, 4]}
STEPS = 25

rng = np.random.default_rng(33)
params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
target = {k: (3.0 * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}
opt = optax.contrib.prodigy(
    HYPER["lr"], betas=(HYPER["beta1"], HYPER["beta2"]), eps=HYPER["eps"], estim_lr0=HYPER["estim_lr0"],
    estim_lr_coef=HYPER["estim_lr_coef"], weight_decay=HYPER["weight_decay"])
p = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}
state = opt.init(p)
steps = []
for t in range(STEPS):
    grads = {k: (np.asarray(p[k]) - target[k] + 0.3 * rng.standard_normal(s)).astype(np.float32)
             for k, s in SHAPES.items()}
    updates, state = opt.update({k: jnp.asarray(v, dtype=jnp.float64) for k, v in grads.items()}, state, p)
    p = optax.apply_updates(p, updates)
    steps.append({
        "grads": {k: [float(x) for x in v.ravel()] for k, v in grads.items()},
        "expected": {k: floats(v) for k, v in p.items()},
    })
print("d after the last step:", float(state.estim_lr))
write_case(
    "prodigy-optax",
    "prodigy",
    f"optax {optax.__version__} (jax {jax.__version__}), optax.contrib.prodigy",
    HYPER,
    SHAPES,
    params,
    steps,
    {"rel": 5e-5, "abs": 5e-6},
)
