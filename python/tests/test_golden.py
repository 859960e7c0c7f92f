"""Every golden case of tests/golden/ replayed through gdc.torch.Optimizer on torch tensors:
the parameters after every step (and the named state a case records) within the case's
tolerance, as `gdc replay` checks them on the runtime."""

import json

import pytest
import torch

import gdc
import gdc.torch
from conftest import GOLDEN, OPTIMIZERS

CASES = sorted(GOLDEN.glob("*.json"))


def test_every_case_is_here():
    # The Rust suite replays 28 cases; a missing directory must not pass vacuously.
    assert len(CASES) >= 28


def _worst(actual, expected, tol):
    err = (actual.double() - expected.double()).abs()
    allowed = tol["abs"] + tol["rel"] * expected.double().abs()
    return float((err / allowed).max())


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_case(path):
    case = json.loads(path.read_text())
    program = gdc.compile(OPTIMIZERS / f"{case['optimizer']}.gd")
    tol = case["tolerance"]
    params = [
        (p["name"], torch.tensor(p["init"], dtype=torch.float32).reshape(p["shape"]).requires_grad_())
        for p in case["params"]
    ]
    roles = {p["name"]: p.get("role", "other") for p in case["params"]}
    base_shapes = {p["name"]: p["base_shape"] for p in case["params"] if "base_shape" in p}
    opt = gdc.torch.Optimizer(program, params, roles=roles, base_shapes=base_shapes, **case["hyper"])
    by_name = dict(params)
    storage = {name: t.data_ptr() for name, t in params}
    worst = 0.0
    for k, step in enumerate(case["steps"]):
        for name, t in params:
            t.grad = torch.tensor(step["grads"][name], dtype=torch.float32).reshape(t.shape)
        # K-FAC's layer statistics and Sophia-G's Hessian sample, on the steps that carry them.
        inputs = {
            name: {n: torch.tensor(x["data"], dtype=torch.float32).reshape(x["shape"]) for n, x in named.items()}
            for name, named in step.get("inputs", {}).items()
        }
        opt.step(inputs=inputs or None)
        for name, t in params:
            expected = torch.tensor(step["expected"][name], dtype=torch.float32).reshape(t.shape)
            w = _worst(t.detach(), expected, tol)
            assert w <= 1.0, f"step {k + 1}: `{name}` off by {w:.3f} of the tolerance"
            worst = max(worst, w)
        for key, values in step.get("expected_state", {}).items():
            state, name = key.split(".", 1)
            got = opt.state[by_name[name]][state]
            expected = torch.tensor(values, dtype=torch.float32).reshape(got.shape)
            assert _worst(got, expected, tol) <= 1.0, f"step {k + 1}: state `{key}`"
        opt.zero_grad()
    # Stepped in place: the parameters still own the storage they started with.
    assert all(t.data_ptr() == storage[name] for name, t in params)
    print(f"{path.stem}: worst {worst:.4f} of the tolerance")
