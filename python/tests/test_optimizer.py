"""gdc.torch.Optimizer as a torch user meets it: param groups, schedulers, AMP's GradScaler,
state_dict round trips and resumes, bf16 parameters, the non-finite policy, zero copies, and
every bad input raising the documented exception with every tensor left unchanged."""

import copy
import io
import math

import pytest
import torch

import gdc
import gdc.torch
from conftest import OPTIMIZERS

ADAMW = OPTIMIZERS / "adamw.gd"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc2 = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        h = self.emb(x).mean(1)
        h = self.norm(torch.relu(self.fc1(h)))
        return self.head(torch.relu(self.fc2(h)))


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net()


def batch(k):
    g = torch.Generator().manual_seed(100 + k)
    return torch.randint(0, 10, (12, 5), generator=g), torch.randint(0, 10, (12,), generator=g)


def train(model, opt, steps, start=0, scheduler=None):
    losses = []
    for k in range(start, start + steps):
        x, y = batch(k)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ----- parameters, groups, hyperparameters ----------------------------------------------


def test_plain_tensors_named_pairs_and_groups_match_torch_adamw():
    ref = make_net()
    ours = make_net()
    decay = [p for n, p in ours.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in ours.named_parameters() if p.ndim < 2]
    ref_decay = [p for n, p in ref.named_parameters() if p.ndim == 2]
    ref_no_decay = [p for n, p in ref.named_parameters() if p.ndim < 2]
    opt = gdc.torch.Optimizer(ADAMW, [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2)
    ref_opt = torch.optim.AdamW(
        [{"params": ref_decay}, {"params": ref_no_decay, "weight_decay": 0.0}], lr=1e-2, weight_decay=0.01
    )
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 0.01
    a = train(ours, opt, 20)
    b = train(ref, ref_opt, 20)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    for (n, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), n
    # Each group's own decay (matched above against torch with the same groups); both
    # groups hold state.
    assert set(opt.state[no_decay[0]]) == {"step", "m", "v"}
    assert set(opt.state[decay[0]]) == {"step", "m", "v"}


def test_named_parameters_key_state_by_name():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.named_parameters())
    assert opt.param_groups[0]["param_names"][0] == "emb.weight"
    train(model, opt, 1)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == [n for n, _ in model.named_parameters()]
    assert sd["state"][0]["m"].shape == model.emb.weight.shape
    assert float(sd["state"][0]["step"]) == 1.0


def test_unknown_hyperparameter_and_range_raise_at_once():
    model = make_net()
    with pytest.raises(gdc.HyperparameterError, match="unknown hyperparameter `betas`.*lr, beta1"):
        gdc.torch.Optimizer(ADAMW, model.parameters(), betas=(0.9, 0.99))
    with pytest.raises(gdc.HyperparameterError, match="unknown hyperparameter `momentum`"):
        gdc.torch.Optimizer(ADAMW, [{"params": list(model.parameters()), "momentum": 0.9}])
    ranged = next(
        (p, h) for p in sorted(OPTIMIZERS.glob("*.gd")) for h in gdc.compile(p).hypers if h.range is not None
    )
    path, h = ranged
    with pytest.raises(gdc.HyperparameterError, match=f"`{h.name}` must be within"):
        gdc.torch.Optimizer(path, [torch.zeros(4, 4, requires_grad=True)], **{h.name: h.range[1] + 1.0})
    with pytest.raises(gdc.HyperparameterError, match="is an int"):
        gdc.torch.Optimizer(OPTIMIZERS / "muon.gd", [torch.zeros(4, 4, requires_grad=True)], ns_steps=2.5)


def test_a_bad_value_set_in_a_group_raises_at_step_before_anything_changes():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.parameters())
    train(model, opt, 2)
    before = snapshot(model)
    state = opt.state_dict()
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(gdc.HyperparameterError):
        train(model, opt, 1)
    assert same(before, snapshot(model))
    assert torch.equal(opt.state_dict()["state"][0]["m"], state["state"][0]["m"])


@pytest.mark.parametrize(
    "make",
    [
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1.0 / (1 + k)),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=12, cycle_momentum=False),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 3), torch.optim.lr_scheduler.ExponentialLR(o, 0.9)],
            milestones=[3],
        ),
    ],
    ids=["LambdaLR", "CosineAnnealingLR", "OneCycleLR", "SequentialLR"],
)
def test_schedulers_drive_lr_as_for_torch_adamw(make):
    ours, ref = make_net(), make_net()
    opt = gdc.torch.Optimizer(ADAMW, ours.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.01)
    s1, s2 = make(opt), make(ref_opt)
    a = train(ours, opt, 10, scheduler=s1)
    b = train(ref, ref_opt, 10, scheduler=s2)
    assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


def test_onecycle_cycles_momentum_of_sgd():
    # sgd.gd names its momentum `momentum`, as torch does, so OneCycleLR cycles it.
    model = make_net()
    opt = gdc.torch.Optimizer(OPTIMIZERS / "sgd.gd", model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=5)
    train(model, opt, 3, scheduler=sched)
    assert opt.param_groups[0]["momentum"] != 0.9


def test_closure_and_params_without_grad_are_skipped():
    model = make_net()
    for p in model.fc2.parameters():
        p.requires_grad_(False)
    frozen = snapshot(model)
    opt = gdc.torch.Optimizer(ADAMW, model.parameters(), lr=1e-2)
    x, y = batch(0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    after = snapshot(model)
    assert torch.equal(after["fc2.weight"], frozen["fc2.weight"])
    assert not torch.equal(after["fc1.weight"], frozen["fc1.weight"])
    assert model.fc2.weight not in opt.state


def test_infer_roles_of_a_transformer_like_model():
    roles = gdc.torch.infer_roles(make_net())
    assert roles == {
        "emb.weight": "embedding",
        "fc1.weight": "hidden",
        "fc1.bias": "bias",
        "norm.weight": "norm",
        "norm.bias": "norm",
        "fc2.weight": "hidden",
        "fc2.bias": "bias",
        "head.weight": "output",
        "head.bias": "bias",
    }


def test_muon_adamw_routes_by_inferred_roles():
    model = make_net()
    opt = gdc.torch.Optimizer(
        OPTIMIZERS / "muon_adamw.gd", model.named_parameters(), roles=gdc.torch.infer_roles(model)
    )
    train(model, opt, 2)
    assert set(opt.state[model.fc1.weight]) == {"step", "muon.buf"}
    assert set(opt.state[model.head.weight]) == {"step", "adamw.m", "adamw.v"}


def test_a_policy_clipped_in_front_matches_clip_grad_norm_then_muon_and_adamw():
    """`part clip_grad_norm` in a policy is PyTorch's recipe: one clip_grad_norm_ over every
    parameter, then torch.optim.Muon on the hidden matrices and AdamW on the rest (Muon's
    Newton-Schulz in float32 on both sides, as in the golden case muon_adamw_clip-torch)."""
    import inspect

    import torch.optim._muon as muon_impl

    ours, ref = make_net(), make_net()
    roles = gdc.torch.infer_roles(ours)
    hypers = {"max_norm": 0.5, "muon.ns_precision": 24, "muon.lr": 0.02, "adamw.lr": 3e-3}
    opt = gdc.torch.Optimizer(OPTIMIZERS / "muon_adamw_clip.gd", ours.named_parameters(), roles=roles, **hypers)
    hidden = [p for n, p in ref.named_parameters() if roles[n] == "hidden"]
    rest = [p for n, p in ref.named_parameters() if roles[n] != "hidden"]
    muon = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    adamw = torch.optim.AdamW(rest, lr=3e-3, weight_decay=0.01, foreach=False)
    original = muon_impl._zeropower_via_newtonschulz
    source = inspect.getsource(original).replace("torch.bfloat16", "torch.float32")
    scope = dict(muon_impl.__dict__)
    exec(compile(source, "muon_f32", "exec"), scope)
    muon_impl._zeropower_via_newtonschulz = scope["_zeropower_via_newtonschulz"]
    try:
        norms = []
        for k in range(6):
            x, y = batch(k)
            for model in (ours, ref):
                model.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)))
            muon.step()
            adamw.step()
    finally:
        muon_impl._zeropower_via_newtonschulz = original
    assert max(norms) > 0.5, f"the gradients were never clipped: {norms}"
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"`{name}`: {m}")


# ----- state_dict -----------------------------------------------------------------------


def test_state_dict_round_trip_is_exact_and_resume_equals_the_uninterrupted_run():
    for name in ("adamw", "muon_adamw", "soap", "schedule_free_adamw"):
        path = OPTIMIZERS / f"{name}.gd"
        straight = make_net()
        opt = gdc.torch.Optimizer(path, straight.named_parameters(), roles=gdc.torch.infer_roles(straight))
        train(straight, opt, 5)
        buf = io.BytesIO()
        torch.save({"model": straight.state_dict(), "opt": opt.state_dict()}, buf)
        train(straight, opt, 5, start=5)

        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        resumed = make_net(seed=1)
        resumed.load_state_dict(saved["model"])
        opt2 = gdc.torch.Optimizer(path, resumed.named_parameters(), roles=gdc.torch.infer_roles(resumed))
        opt2.load_state_dict(saved["opt"])
        # The round trip is exact.
        again = opt2.state_dict()
        for k, st in saved["opt"]["state"].items():
            for s, t in st.items():
                assert torch.equal(again["state"][k][s], t), (name, k, s)
        train(resumed, opt2, 5, start=5)
        assert same(snapshot(straight), snapshot(resumed)), name


def test_load_state_dict_refuses_a_mismatch_and_changes_nothing():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.parameters())
    train(model, opt, 3)
    sd = opt.state_dict()
    other = make_net()
    opt2 = gdc.torch.Optimizer(ADAMW, other.parameters())
    train(other, opt2, 1)
    before = opt2.state_dict()

    bad = copy.deepcopy(sd)
    bad["state"][1]["m"] = torch.zeros(3, 3)
    with pytest.raises(gdc.CheckpointError, match="shape"):
        opt2.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["param_groups"][0]["lr"] = -1.0 if False else float("inf")
    with pytest.raises(gdc.CheckpointError):
        opt2.load_state_dict(bad)
    with pytest.raises(gdc.CheckpointError, match="not a gdc state dict"):
        opt2.load_state_dict(torch.optim.AdamW(other.parameters()).state_dict())
    bad = copy.deepcopy(sd)
    del bad["state"][2]["v"]
    with pytest.raises(gdc.CheckpointError, match="v"):
        opt2.load_state_dict(bad)
    # A state dict of FSDP2-sharded parameters (DTensor state) into unsharded ones.
    bad = copy.deepcopy(sd)
    bad["gdc"]["sharded"] = True
    with pytest.raises(gdc.CheckpointError, match="saved with sharded state"):
        opt2.load_state_dict(bad)

    after = opt2.state_dict()
    assert after["gdc"] == before["gdc"]
    for k, st in before["state"].items():
        for s, t in st.items():
            assert torch.equal(after["state"][k][s], t)


def test_checkpoint_file_round_trip(tmp_path):
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.named_parameters())
    train(model, opt, 3)
    opt.save_checkpoint(tmp_path / "opt.safetensors")
    resumed = copy.deepcopy(model)
    opt2 = gdc.torch.Optimizer(ADAMW, resumed.named_parameters())
    opt2.load_checkpoint(tmp_path / "opt.safetensors")
    train(model, opt, 2, start=3)
    train(resumed, opt2, 2, start=3)
    assert same(snapshot(model), snapshot(resumed))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "opt.safetensors").read_bytes()[:100])
    with pytest.raises(gdc.CheckpointError):
        opt2.load_checkpoint(tmp_path / "cut.safetensors")


# ----- AMP, non-finite gradients, bf16 --------------------------------------------------


def test_grad_scaler_skips_the_step_when_it_finds_inf():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = batch(0)
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    stepped = snapshot(model)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y) * float("inf")
    scaler.scale(loss).backward()
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    assert same(stepped, snapshot(model))
    assert scaler.get_scale() < scale
    assert float(opt.state_dict()["state"][0]["step"]) == 1.0


@pytest.mark.parametrize("groups", [1, 2])
def test_nonfinite_policies(groups):
    def make(policy):
        model = make_net()
        params = list(model.parameters())
        spec = [{"params": params[:3]}, {"params": params[3:]}] if groups == 2 else params
        return model, gdc.torch.Optimizer(ADAMW, spec, nonfinite=policy)

    for policy in ("skip_step", "error"):
        model, opt = make(policy)
        train(model, opt, 1)
        before = snapshot(model)
        x, y = batch(1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        model.head.bias.grad[0] = float("nan")
        if policy == "skip_step":
            opt.step()
            assert opt.skipped_steps == 1
        else:
            with pytest.raises(gdc.NonFiniteGradientError, match="nothing was changed"):
                opt.step()
        assert same(before, snapshot(model))
        assert all(float(s["step"]) == 1.0 for s in opt.state_dict()["state"].values())
    model, opt = make("propagate")
    x, y = batch(1)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    model.head.bias.grad[0] = float("nan")
    opt.step()
    assert torch.isnan(model.head.bias).any()


def test_bf16_parameters_with_float32_state():
    torch.manual_seed(0)
    p = torch.randn(64, 32).to(torch.bfloat16).requires_grad_()
    q = p.detach().float().clone().requires_grad_()
    opt = gdc.torch.Optimizer(ADAMW, [p], lr=1e-2)
    ref = gdc.torch.Optimizer(ADAMW, [q], lr=1e-2)
    storage = p.data_ptr()
    for k in range(5):
        g = torch.randn(64, 32, generator=torch.Generator().manual_seed(k))
        p.grad = g.to(torch.bfloat16)
        q.grad = g.to(torch.bfloat16).float()
        opt.step()
        ref.step()
    assert p.dtype == torch.bfloat16 and p.data_ptr() == storage
    assert opt.state[p]["m"].dtype == torch.float32
    # Stochastic rounding: within one bf16 step of the float32 trajectory.
    assert (p.float() - q).abs().max() <= 2 ** -7 * q.abs().max() * 2


# ----- zero copies ----------------------------------------------------------------------


def test_step_is_in_place():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.parameters())
    ptrs = [p.data_ptr() for p in model.parameters()]
    storages = [p.untyped_storage() for p in model.parameters()]
    versions = [p._version for p in model.parameters()]
    before = snapshot(model)
    train(model, opt, 2)
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert all(p.untyped_storage().data_ptr() == s.data_ptr() for p, s in zip(model.parameters(), storages))
    assert not same(before, snapshot(model))
    # Written behind autograd's back, as torch's own fused optimizers do (no version bump).
    assert [p._version for p in model.parameters()] == versions


# ----- bad input ------------------------------------------------------------------------


def _bound():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.named_parameters())
    train(model, opt, 1)
    x, y = batch(1)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return model, opt


def _refused(model, opt, exc, match):
    before = snapshot(model)
    state = opt.state_dict()
    with pytest.raises(exc, match=match):
        opt.step()
    assert same(before, snapshot(model))
    after = opt.state_dict()
    assert after["gdc"] == state["gdc"]
    for k, st in state["state"].items():
        for s, t in st.items():
            assert torch.equal(after["state"][k][s], t)


def test_non_contiguous_gradient():
    model, opt = _bound()
    model.fc2.weight.grad = model.fc2.weight.grad.t().contiguous().t()
    _refused(model, opt, gdc.TensorError, "gradient of `fc2.weight` is not contiguous")


def test_non_contiguous_parameter():
    model, opt = _bound()
    model.fc2.weight.data = model.fc2.weight.data.t().contiguous().t()
    _refused(model, opt, gdc.TensorError, "`fc2.weight` is not contiguous")


def test_wrong_dtype():
    model, opt = _bound()
    model.fc2.bias.grad_dtype = None  # torch refuses a float64 gradient otherwise
    model.fc2.bias.grad = model.fc2.bias.grad.double()
    _refused(model, opt, gdc.TensorError, "gradient of `fc2.bias` is torch.float64")
    with pytest.raises(gdc.TensorError, match="torch.float64"):
        gdc.torch.Optimizer(ADAMW, [torch.zeros(3, dtype=torch.float64, requires_grad=True)])


def test_parameter_changed_dtype():
    model, opt = _bound()
    grad = model.fc1.bias.grad
    model.fc1.bias.data = model.fc1.bias.data.to(torch.bfloat16)
    model.fc1.bias.grad_dtype = None
    model.fc1.bias.grad = grad
    _refused(model, opt, gdc.TensorError, "`fc1.bias` changed dtype to torch.bfloat16")
    model.fc1.bias.data = model.fc1.bias.data.double()
    _refused(model, opt, gdc.TensorError, "`fc1.bias` is torch.float64")


def test_shape_changed_since_binding():
    model, opt = _bound()
    model.fc1.bias.data = torch.zeros(17)
    model.fc1.bias.grad = torch.zeros(17)
    _refused(model, opt, gdc.TensorError, "`fc1.bias` has shape \\(17,\\), but the optimizer was bound")


def test_gradient_of_the_wrong_shape():
    model, opt = _bound()
    model.fc1.bias.grad.data = torch.zeros(4, 4)  # `.grad =` checks the shape, `.grad.data =` does not
    _refused(model, opt, gdc.TensorError, "gradient of `fc1.bias` has shape \\(4, 4\\)")


def test_tensors_on_two_devices():
    # A CPU parameter beside one on another device: refused, naming it, nothing stepped.
    model, opt = _bound()
    other = torch.zeros(3, device="meta", requires_grad=True)
    other.grad = torch.zeros(3, device="meta")
    opt.add_param_group({"params": [("elsewhere", other)]})
    _refused(model, opt, gdc.DeviceError, "`elsewhere` is on meta")


def test_tensor_given_twice():
    w = torch.zeros(4, requires_grad=True)
    with pytest.raises(gdc.TensorError, match="given twice"):
        gdc.torch.Optimizer(ADAMW, [w, w])
    with pytest.raises(ValueError, match="more than one parameter group"):
        gdc.torch.Optimizer(ADAMW, [{"params": [w]}, {"params": [w]}])


def test_views_of_one_storage_are_refused():
    base = torch.zeros(8)
    a = base[:5].requires_grad_()
    b = base[3:].requires_grad_()
    a.grad = torch.ones(5)
    b.grad = torch.ones(5)
    opt = gdc.torch.Optimizer(ADAMW, [a, b])
    with pytest.raises(gdc.TensorError, match="shares memory"):
        opt.step()
    assert torch.equal(base, torch.zeros(8))
    p = torch.zeros(6, requires_grad=True)
    p.grad = p.detach()
    with pytest.raises(gdc.TensorError, match="shares memory"):
        gdc.torch.Optimizer(ADAMW, [p]).step()


def test_gradient_set_changing_after_the_first_step():
    model, opt = _bound()
    model.fc2.bias.grad = None
    _refused(model, opt, gdc.TensorError, "`fc2.bias` had a gradient at the group's first step")


def test_sparse_gradient():
    model, opt = _bound()
    model.fc1.bias.grad = model.fc1.bias.grad.to_sparse()
    _refused(model, opt, gdc.TensorError, "gradient of `fc1.bias` is torch.sparse_coo")


def test_lr_as_tensor_and_math():
    model = make_net()
    opt = gdc.torch.Optimizer(ADAMW, model.parameters(), lr=torch.tensor(1e-2))
    train(model, opt, 1)
    assert math.isclose(opt.param_groups[0]["lr"], 1e-2, rel_tol=1e-6)


def test_a_parameter_the_program_cannot_step_is_refused_at_construction():
    w = torch.zeros(4, 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    with pytest.raises(gdc.TensorError, match="no update for parameter `b`"):
        gdc.torch.Optimizer(OPTIMIZERS / "muon.gd", [("w", w), ("b", b)])
    with pytest.raises(gdc.TensorError, match="routes no optimizer|unknown role"):
        gdc.torch.Optimizer(OPTIMIZERS / "muon_adamw.gd", [("w", w)], roles={"w": "boss"})


def test_a_scheduler_on_a_policy_says_what_to_do():
    model = make_net()
    opt = gdc.torch.Optimizer(OPTIMIZERS / "muon_adamw.gd", model.named_parameters(), roles=gdc.torch.infer_roles(model))
    with pytest.raises(KeyError, match="muon.lr.*set them each step yourself"):
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)


def test_zero_without_a_process_group_says_what_to_do():
    net = Net()
    with pytest.raises(gdc.GdcError, match="init_process_group"):
        gdc.torch.Optimizer(ADAMW, net.parameters(), zero=True)
    with pytest.raises(gdc.GdcError, match="pass zero=True"):
        gdc.torch.Optimizer(ADAMW, net.parameters(), process_group=object())


MUON = OPTIMIZERS / "muon.gd"


def _muon_run(**hypers):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(24, 40))
    opt = gdc.torch.Optimizer(MUON, [w], **dict({"lr": 0.02}, **hypers))
    for step in range(3):
        w.grad = torch.randn(24, 40, generator=torch.Generator().manual_seed(step))
        opt.step()
    return w.detach().clone(), opt


def test_a_precision_hyperparameter_takes_its_names_and_numbers():
    bf16, opt = _muon_run()
    assert opt.param_groups[0]["ns_precision"] == "bf16"
    f32, opt32 = _muon_run(ns_precision="f32")
    assert opt32.param_groups[0]["ns_precision"] == "f32"
    as_number, _ = _muon_run(ns_precision=24)
    assert torch.equal(f32, as_number)
    tf32, _ = _muon_run(ns_precision="tf32")
    # Lower-precision operands move the result, by about their rounding (2^-8, 2^-11) of
    # the update, never more than a few percent of it.
    update = (f32 - _muon_run(lr=0.0)[0]).abs().max().item()
    for low, bound in [(bf16, 0.05), (tf32, 0.01)]:
        diff = (low - f32).abs().max().item()
        assert 0 < diff < bound * update, (diff, update)
    # Set between steps, through the param group, as any hyperparameter.
    opt.param_groups[0]["ns_precision"] = "f32"
    state = opt.state_dict()
    assert state["param_groups"][0]["ns_precision"] == "f32"
    opt.load_state_dict(state)


def test_a_bad_precision_is_refused_and_steps_nothing():
    w = torch.nn.Parameter(torch.randn(8, 8))
    for bad in ["fp8", 3.0, "BF16"]:
        with pytest.raises(gdc.HyperparameterError, match="ns_precision"):
            gdc.torch.Optimizer(MUON, [w], ns_precision=bad)
    opt = gdc.torch.Optimizer(MUON, [w])
    before = w.detach().clone()
    w.grad = torch.ones(8, 8)
    opt.param_groups[0]["ns_precision"] = "fp16"
    with pytest.raises(gdc.HyperparameterError, match="precision"):
        opt.step()
    assert torch.equal(w.detach(), before)
