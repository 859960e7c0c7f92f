"""Per-step inputs through gdc.torch: K-FAC fed by the `model=` hooks on nn.Linear layers
against an independent float64 implementation of the reference's formulas, statistics
recorded only on the steps that read them, Sophia-G with `sophia_hessian_inputs`, and
every misuse a typed error that steps nothing."""

import pytest
import torch

import gdc
import gdc.torch
from conftest import OPTIMIZERS
from gdc.errors import GdcError, TensorError

HYPER = dict(lr=0.05, momentum=0.9, stat_decay=0.95, damping=1e-2, kl_clip=1e-2, weight_decay=1e-3)


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7, bias=False), torch.nn.Tanh(), torch.nn.Linear(7, 3, bias=False)
    )


class _Probe:
    """The test's own record of what a bias-free layer saw: its input and the gradient at its
    output (the quantities K-FAC's hooks take), independent of gdc's hooks."""

    def __init__(self, model):
        self.seen = {}
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_hook(self._hook(name + ".weight"))

    def _hook(self, name):
        def forward(module, args, output):
            self.seen[name] = {"a": args[0].detach().double()}
            output.register_hook(lambda g: self.seen[name].__setitem__("s", g.detach().double()))

        return forward


def _kfac_reference(state, params, grads, seen, k, tcov, tinv, hp):
    """One step of alecwangcq/KFAC-Pytorch's KFACOptimizer (tests/golden/README.md) in
    float64, on every layer at once (the KL clip spans them)."""
    vs = {}
    for name, p in params.items():
        st = state.setdefault(name, {"A": torch.eye(p.shape[1], dtype=torch.float64), "G": torch.eye(p.shape[0], dtype=torch.float64), "buf": torch.zeros_like(p)})
        if k % tcov == 0:
            a, s = seen[name]["a"], seen[name]["s"]
            b = a.shape[0]
            d = hp["stat_decay"]
            st["A"] = d * st["A"] + (1 - d) * a.T @ a / b
            st["G"] = d * st["G"] + (1 - d) * b * s.T @ s
        if k % tinv == 0:
            st["dA"], st["QA"] = torch.linalg.eigh(st["A"])
            st["dG"], st["QG"] = torch.linalg.eigh(st["G"])
            st["dA"] = st["dA"] * (st["dA"] > 1e-10)
            st["dG"] = st["dG"] * (st["dG"] > 1e-10)
        g = grads[name]
        v1 = st["QG"].T @ g @ st["QA"]
        vs[name] = st["QG"] @ (v1 / (torch.outer(st["dG"], st["dA"]) + hp["damping"])) @ st["QA"].T
    vg = sum(float((vs[n] * grads[n]).sum()) for n in params) * hp["lr"] ** 2
    nu = min(1.0, (hp["kl_clip"] / vg) ** 0.5)
    out = {}
    for name, p in params.items():
        st = state[name]
        d = nu * vs[name]
        if hp["weight_decay"] != 0 and k >= 20 * tcov:
            d = d + hp["weight_decay"] * p
        st["buf"] = hp["momentum"] * st["buf"] + d
        out[name] = p - hp["lr"] * st["buf"]
    return out


@pytest.mark.parametrize("tcov,tinv", [(1, 2), (2, 4)])
def test_kfac_with_hooks_follows_the_reference_formulas(tcov, tinv):
    model = _mlp(0)
    probe = _Probe(model)
    opt = gdc.torch.Optimizer(OPTIMIZERS / "kfac.gd", model.named_parameters(), model=model, tcov=tcov, tinv=tinv, **HYPER)
    torch.manual_seed(1)
    state = {}
    for k in range(8):
        x, y = torch.randn(16, 5), torch.randn(16, 3)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        params = {n: p.detach().double().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.double() for n, p in model.named_parameters()}
        # gdc's hooks recorded the layers' statistics only before the steps that read them.
        reads = k % tcov == 0
        assert bool(opt._recorded) == reads, f"step {k + 1}: recorded {sorted(opt._recorded)}"
        want = _kfac_reference(state, params, grads, probe.seen, k, tcov, tinv, HYPER)
        opt.step()
        opt.zero_grad()
        for n, p in model.named_parameters():
            err = (p.detach().double() - want[n]).abs().max().item()
            assert err <= 1e-5 * (1 + want[n].abs().max().item()), f"step {k + 1} `{n}`: off by {err:.2e}"


def test_sophia_with_sampled_label_hessians():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    hp = dict(lr=0.01, beta1=0.965, beta2=0.99, rho=0.04, weight_decay=0.1, bs=32.0)
    opt = gdc.torch.Optimizer(OPTIMIZERS / "sophia_g.gd", model.named_parameters(), **hp)
    ref = {n: {"p": p.detach().double().clone(), "m": torch.zeros_like(p, dtype=torch.float64), "hess": torch.zeros_like(p, dtype=torch.float64)} for n, p in model.named_parameters()}
    names = {p: n for n, p in model.named_parameters()}
    h, k = None, 2
    for it in range(7):
        x, y = torch.randn(32, 6), torch.randint(0, 4, (32,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            r, g = ref[n], p.grad.double()
            if h is not None:
                hn = h[p]["h"].double()
                r["hess"] = hp["beta2"] * r["hess"] + (1 - hp["beta2"]) * hn * hn
            r["p"] = r["p"] * (1 - hp["lr"] * hp["weight_decay"])
            r["m"] = hp["beta1"] * r["m"] + (1 - hp["beta1"]) * g
            ratio = (r["m"].abs() / (hp["rho"] * hp["bs"] * r["hess"] + 1e-15)).clamp(max=1)
            r["p"] = r["p"] - hp["lr"] * r["m"].sign() * ratio
        opt.step(inputs=h)
        opt.zero_grad()
        h = None
        if it % k == k - 1:
            h = gdc.torch.sophia_hessian_inputs(model(torch.randn(32, 6)), model.parameters())
            assert set(h) == set(names) and all(p.grad is None for p in model.parameters())
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v["h"]) for v in h.values()]))
            assert norm <= 1.0 + 1e-5, "clipped to global norm 1, as train_sophiag.py does"
        for n, p in model.named_parameters():
            err = (p.detach().double() - ref[n]["p"]).abs().max().item()
            assert err <= 1e-5, f"iteration {it} `{n}`: off by {err:.2e}"
            ref[n]["p"] = p.detach().double().clone()
    hess = opt.state[model[0].weight]["hess"]
    assert float(hess.abs().sum()) > 0, "the refreshes reached the Hessian estimate"


def test_misuse_of_inputs_is_a_typed_error_and_steps_nothing():
    model = _mlp(3)
    opt = gdc.torch.Optimizer(OPTIMIZERS / "kfac.gd", model.named_parameters())
    model(torch.randn(4, 5)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    w1, w2 = model[0].weight, model[2].weight
    good = {w1: {"a": torch.randn(4, 5), "s": torch.randn(4, 7)}, w2: {"a": torch.randn(4, 7), "s": torch.randn(4, 3)}}
    cases = [
        (None, TensorError, "reads input `a` of parameter `0.weight`, which it was not given"),
        ({**good, w1: {"a": torch.randn(4, 5, dtype=torch.float64), "s": torch.randn(4, 7)}}, TensorError, "is torch.float64"),
        ({**good, w1: {"a": torch.randn(5, 4).T, "s": torch.randn(4, 7)}}, TensorError, "not a contiguous"),
        ({**good, w1: {"b": torch.randn(4, 5)}}, TensorError, "`b` (given for parameter `0.weight`) is not an input"),
        ({**good, w1: {"a": torch.randn(4, 6), "s": torch.randn(4, 7)}}, TensorError, "declares it [batch (any), 5]"),
        ({**good, w1: {"a": torch.randn(4, 5), "s": torch.randn(3, 7)}}, TensorError, "disagree on `batch`"),
        ({torch.zeros(2): {"a": torch.randn(4, 5)}}, TensorError, "not a parameter of this optimizer"),
    ]
    for inputs, kind, message in cases:
        with pytest.raises(kind, match=None) as e:
            opt.step(inputs=inputs)
        assert message in str(e.value), str(e.value)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before)), message
    opt.step(inputs=good)
    assert not torch.equal(model[0].weight, before[0])
    plain = gdc.torch.Optimizer(OPTIMIZERS / "adamw.gd", model.named_parameters())
    with pytest.raises(TensorError, match="declares no `input`"):
        plain.step(inputs=good)
    with pytest.raises(GdcError, match="declares none"):
        gdc.torch.Optimizer(OPTIMIZERS / "sophia_g.gd", model.named_parameters(), model=model)
