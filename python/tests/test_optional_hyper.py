"""Optional hyperparameters through gdc.torch: `None` unsets one (its `if present(...)` stage
is skipped), a number sets it, in the constructor and in a param group; a hyperparameter that
is not optional refuses `None` before anything steps."""
import pytest
import torch

import gdc
import gdc.torch

SOURCE = """
optimizer sgd_maybe_clipped {
  hyper lr = 0.1
  optional hyper max_norm = none
  update(p, g) {
    var d = g
    if present(max_norm) {
      let norm = global_norm(g)
      d = where(norm < max_norm, g, g / norm * max_norm)
    }
    p = p - lr * d
  }
}
"""


def step(opt, w, grad):
    w.grad = grad.clone()
    before = w.detach().clone()
    opt.step()
    return (w.detach() - before).norm().item()


def test_none_unsets_and_a_number_sets():
    program = gdc.compile(SOURCE)
    info = {h.name: h for h in program.hypers}
    assert info["max_norm"].optional and not info["lr"].optional
    w = torch.zeros(7, 5, requires_grad=True)
    opt = gdc.torch.Optimizer(program, [w])
    assert opt.param_groups[0]["max_norm"] is None
    grad = torch.full((7, 5), 3.0)
    # Unset: plain SGD moves lr * |g|.
    assert step(opt, w, grad) == pytest.approx(0.1 * grad.norm().item(), rel=1e-6)
    opt.param_groups[0]["max_norm"] = 1.0
    assert step(opt, w, grad) == pytest.approx(0.1, rel=1e-5)
    opt.param_groups[0]["max_norm"] = None
    assert step(opt, w, grad) == pytest.approx(0.1 * grad.norm().item(), rel=1e-6)
    # Set from the constructor.
    w2 = torch.zeros(7, 5, requires_grad=True)
    opt2 = gdc.torch.Optimizer(program, [w2], max_norm=2.0)
    assert step(opt2, w2, grad) == pytest.approx(0.2, rel=1e-5)


def test_none_for_a_hyperparameter_that_is_not_optional_raises():
    program = gdc.compile(SOURCE)
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(gdc.HyperparameterError, match="not optional"):
        gdc.torch.Optimizer(program, [w], lr=None)
    opt = gdc.torch.Optimizer(program, [w])
    opt.param_groups[0]["lr"] = None
    w.grad = torch.ones(3)
    with pytest.raises(gdc.HyperparameterError, match="not optional"):
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(3))


def test_an_unset_hyperparameter_survives_a_state_dict_round_trip():
    """Prodigy's beta3 is optional (unset: sqrt(beta2)); its d is a global the update
    assigns. Saved after 5 steps and loaded into a fresh optimizer, 3 more steps equal 8
    steps run through, and d comes back."""
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "optimizers", "prodigy.gd")
    program = gdc.compile(path)

    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(6, 4))
        b = torch.nn.Parameter(torch.randn(4))
        return [w, b], gdc.torch.Optimizer(program, [w, b], estim_lr0=1e-2)

    def run(params, opt, steps):
        for s in steps:
            g = torch.Generator().manual_seed(s)
            for p in params:
                p.grad = p.detach() - 2.0 + 0.1 * torch.randn(p.shape, generator=g)
            opt.step()

    ref, ref_opt = make()
    run(ref, ref_opt, range(8))
    params, opt = make()
    assert opt.param_groups[0]["beta3"] is None
    assert opt.global_value("d") is None, "nothing stepped yet"
    run(params, opt, range(5))
    saved = opt.state_dict()
    fresh_params, fresh = make()
    with torch.no_grad():
        for p, q in zip(fresh_params, params):
            p.copy_(q)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["beta3"] is None
    run(fresh_params, fresh, range(5, 8))
    for p, q in zip(fresh_params, ref):
        assert torch.equal(p.detach(), q.detach())
    d_saved = saved["gdc"]["bindings"][0]["globals"]["d"]
    assert d_saved > 1e-2, "d grew from estim_lr0 and is in the state dict"
    assert opt.global_value("d") == d_saved
    with pytest.raises(gdc.GdcError, match="no global named `e`"):
        opt.global_value("e")
    assert fresh.state_dict()["gdc"]["bindings"][0]["globals"]["d"] == ref_opt.state_dict()["gdc"]["bindings"][0]["globals"]["d"]
