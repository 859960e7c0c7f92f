"""What the case generators in this folder share: writing one gdc-golden-1 case."""
import json
import pathlib

import numpy as np


def floats(v):
    """A tensor's values, row-major, as float32 read back into Python floats."""
    return [float(x) for x in np.asarray(v, dtype=np.float32).ravel()]


def write_case(name, optimizer, reference, hyper, shapes, init, steps, tolerance, roles=None):
    """Writes tests/golden/{name}.json: `shapes` and `init` keyed by parameter name, `steps`
    a list of {"grads", "expected"[, "expected_state"]} with values already listed, `roles`
    (optional) each parameter's role by name."""
    case = {
        "format": "gdc-golden-1",
        "optimizer": optimizer,
        "reference": reference,
        "hyper": hyper,
        "params": [dict({"name": k, "shape": s, "init": floats(init[k])}, **({"role": roles[k]} if roles else {}))
                   for k, s in shapes.items()],
        "steps": steps,
        "tolerance": tolerance,
    }
    out = pathlib.Path(__file__).resolve().parents[1] / f"{name}.json"
    out.write_text(json.dumps(case) + "\n")
    print(f"wrote {out}")
