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
