"""The code each spawned rank of test_distributed.py runs (gloo on the CPU). A failed check
raises in the rank, and torch.multiprocessing.spawn re-raises it in the test."""

import math
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import gdc
import gdc.torch
from gdc.errors import NonFiniteGradientError, TensorError

OPTIMIZERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "optimizers")

# Shapes whose leading dimensions split unevenly over 2 and 3 ranks, and leave some shard
# empty at 3 (2 rows: 1, 1, 0).
SHAPES = [
    ("embed", (11, 6), "embedding"),
    ("h0_weight", (9, 6), "hidden"),
    ("h0_bias", (9,), "bias"),
    ("h1_weight", (6, 9), "hidden"),
    ("h1_bias", (6,), "bias"),
    ("norm", (6,), "norm"),
    ("head", (2, 6), "output"),
]
ROLES = {name: role for name, _, role in SHAPES}

# (program, hyperparameters): elementwise (local shards), whole (owners), and mixed.
CASES = [
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
    ("lion", {"lr": 1e-3}),
    ("lamb", {}),
    ("adamw_clip_cosine", {"lr": 1e-2, "warmup_steps": 2, "decay_steps": 10, "max_grad_norm": 1.0}),
    ("adafactor", {}),
    ("muon_adamw", {}),
    ("shampoo", {}),
    ("soap", {}),
    # Globals the update assigns from reductions over every parameter (d, the numerator).
    ("prodigy", {"estim_lr0": 1e-2, "weight_decay": 0.01}),
]


def init(rank, world, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    return init_device_mesh("cpu", (world,))


def done():
    """Every rank reaches the end before any tears gloo down (a rank leaving while a peer's
    last collective is still in flight aborts it), then the rank leaves without Python's
    interpreter teardown: a gloo process group that objects still hold (an optimizer's
    bindings, a device mesh) is destroyed there, after the group was, and about one spawn in
    ten aborted in it ("terminate called without an active exception", no Python frame)
    after every check had passed."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class Bag(torch.nn.Module):
    """Parameters of the shapes above, the same on every rank for a seed."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        for name, shape, _ in SHAPES:
            self.register_parameter(name, torch.nn.Parameter(torch.randn(shape, generator=g) * 0.5))


def grads(step):
    """The full gradient of each parameter at `step`, the same on every rank."""
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(shape, generator=g) for _, shape, _ in SHAPES]


def full(p):
    return p.full_tensor() if isinstance(p, torch.distributed.tensor.DTensor) else p.detach()


def fsdp_equals_single(rank, world, port):
    """For each case: the FSDP2-sharded run's parameters equal, bit for bit, those of the
    same program stepped in one process on whole tensors, after each of 4 steps."""
    mesh = init(rank, world, port)
    for name, hypers in CASES:
        path = os.path.join(OPTIMIZERS, f"{name}.gd")
        program = gdc.compile(path)
        ref = Bag()
        sharded = Bag()
        fully_shard(sharded, mesh=mesh)
        ref_opt = gdc.torch.Optimizer(program, ref.named_parameters(), roles=ROLES, threads=1, **hypers)
        opt = gdc.torch.Optimizer(program, sharded.named_parameters(), roles=ROLES, threads=1, **hypers)
        for step in range(4):
            for (pr, ps), g in zip(zip(ref.parameters(), sharded.parameters()), grads(step)):
                pr.grad = g.clone()
                ps.grad = distribute_tensor(g, mesh, [Shard(0)])
            ref_opt.step()
            opt.step()
            for (pname, pr), ps in zip(ref.named_parameters(), sharded.parameters()):
                check_equal(f"{name}, world {world}, step {step + 1}, `{pname}`", full(ps), pr.detach(), name)
        binding = next(iter(opt._bindings.values()))
        whole = [binding.names[k] for k in binding.whole]
        reducing = [binding.names[k] for k in binding.reducing]
        if name in ("adamw", "lion") and (whole or reducing):
            raise AssertionError(f"{name} stepped {whole + reducing} whole or reducing; it is elementwise")
        if name in REDUCING and (whole or len(reducing) != len(SHAPES)):
            raise AssertionError(f"{name} stepped {whole} whole, {reducing} by reducing shards")
        sent = binding.sent
        if name in ("adamw", "lion") and sent:
            raise AssertionError(f"{name} communicated {sent}; elementwise shards need nothing")
        if name in REDUCING and world > 1 and (set(sent) != {"all_reduce"} or sent["all_reduce"][0] == 0):
            raise AssertionError(f"{name} communicated {sent}; reducing shards need all-reduces only")
        if name == "shampoo" and len(whole) != len(SHAPES):
            raise AssertionError(f"{name} stepped only {whole} whole")
        matrices = sorted(n for n, s, _ in SHAPES if len(s) == 2)
        if name == "soap" and sorted(whole) != matrices:  # SOAP steps vectors as Adam does
            raise AssertionError(f"soap stepped {whole} whole; expected the matrices")
        if name == "muon_adamw" and sorted(whole) != ["h0_weight", "h1_weight"]:
            raise AssertionError(f"muon_adamw stepped {whole} whole; expected the hidden matrices")
    done()


def zero_equals_single(rank, world, port):
    """ZeRO-1 (zero=True) over a replicated model: for each case, every rank's parameters
    equal those of one process stepping whole tensors after each of 4 steps (bit for bit but
    for the reducing programs), every rank steps only its slices and owned matrices, and the
    ranks exchange parameters by broadcasts, never gather or scatter. FSDP2
    parameters with zero=True are refused: their state is sharded already."""
    mesh = init(rank, world, port)
    sharded = Bag()
    fully_shard(sharded, mesh=mesh)
    try:
        gdc.torch.Optimizer(os.path.join(OPTIMIZERS, "adamw.gd"), sharded.named_parameters(), zero=True)
        raise AssertionError("zero=True over FSDP2 parameters was accepted")
    except TensorError as e:
        if "drop zero=True" not in str(e):
            raise AssertionError(f"the refusal does not say what to do: {e}") from None
    for name, hypers in CASES:
        program = gdc.compile(os.path.join(OPTIMIZERS, f"{name}.gd"))
        ref, rep = Bag(), Bag()
        ref_opt = gdc.torch.Optimizer(program, ref.named_parameters(), roles=ROLES, threads=1, **hypers)
        opt = gdc.torch.Optimizer(program, rep.named_parameters(), roles=ROLES, threads=1, zero=True, **hypers)
        for step in range(4):
            for pr, pz, g in zip(ref.parameters(), rep.parameters(), grads(step)):
                pr.grad = g.clone()
                pz.grad = g.clone()
            ref_opt.step()
            opt.step()
            for (pname, pr), pz in zip(ref.named_parameters(), rep.parameters()):
                check_equal(f"zero {name}, world {world}, step {step + 1}, `{pname}`", pz.detach(), pr.detach(), name)
        binding = next(iter(opt._bindings.values()))
        sent = set(binding.sent)
        if sent - {"broadcast", "all_reduce"}:
            raise AssertionError(f"zero {name} communicated {binding.sent}; ZeRO-1 needs no gather or scatter")
        updated = 4 * 4 * sum(n for _, _, n in binding._segment(rank))  # bytes of 4 float32 steps
        if world > 1 and name in ("adamw", "lion", "shampoo") and (sent != {"broadcast"} or binding.sent["broadcast"][1] != updated):
            raise AssertionError(f"zero {name} communicated {binding.sent}; each rank broadcasts what it updated, {updated} B")
        # The state is this rank's share: its rows of the slices' (state over columns alone,
        # Adafactor's col_var, every rank holds whole) and the owned matrices'.
        cut = set(program.states_cut_by_rows())
        ref_state = ref_opt.state_dict()["state"].values()
        full_state = sum(t.numel() for e in ref_state for n, t in e.items() if n in cut)
        mine = sum(
            math.prod(shape)
            for stepper in binding.steppers()
            for _, sname, shape in stepper.state_layout()
            if sname in cut
        )
        every = [None] * world
        dist.all_gather_object(every, mine)
        if sum(every) != full_state:
            raise AssertionError(f"zero {name}: the ranks hold {every} state elements, one process {full_state}")
    done()


# Programs whose shards reduce across ranks agree with one process up to the float64
# rounding of the combined sums; the rest bit for bit.
REDUCING = ("lamb", "adamw_clip_cosine", "adafactor", "prodigy")


def check_equal(what, got, want, name):
    if name in REDUCING:
        ok = torch.allclose(got, want, rtol=1e-6, atol=1e-7)
    else:
        ok = torch.equal(got, want)
    if not ok:
        diff = (got - want).abs().max().item()
        raise AssertionError(f"{what}: differs by {diff:.3e}")


DCP_CASES = [
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
    ("lamb", {}),
    ("adamw_clip_cosine", {"lr": 1e-2, "warmup_steps": 2, "decay_steps": 10, "max_grad_norm": 1.0}),
    ("adafactor", {}),
    ("muon_adamw", {}),
    ("shampoo", {}),
    ("prodigy", {"estim_lr0": 1e-2, "weight_decay": 0.01}),
]


def _sharded_run(mesh, name, hypers, steps, zero):
    """A Bag and its optimizer after `steps`: sharded by FSDP2, or replicated with zero=True."""
    program = gdc.compile(os.path.join(OPTIMIZERS, f"{name}.gd"))
    bag = Bag()
    if not zero:
        fully_shard(bag, mesh=mesh)
    opt = gdc.torch.Optimizer(program, bag.named_parameters(), roles=ROLES, threads=1, zero=zero, **hypers)
    for step in steps:
        for p, g in zip(bag.parameters(), grads(step)):
            p.grad = g.clone() if zero else distribute_tensor(g, mesh, [Shard(0)])
        opt.step()
    return bag, opt


def dcp_save(rank, world, port, path, zero):
    """Three FSDP2 (or ZeRO-1) steps of each DCP case, saved with torch.distributed.checkpoint:
    the optimizer's state as DTensors placed Shard(0) as FSDP2 places the parameters."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import DTensor

    mesh = init(rank, world, port)
    for name, hypers in DCP_CASES:
        bag, opt = _sharded_run(mesh, name, hypers, range(3), zero)
        sd = opt.state_dict()
        # State over rows is placed Shard(0), scalars Replicate; Adafactor's col_var (over
        # columns alone, the same on every rank) Replicate, an owner's matrices Shard(0).
        cut = set(opt.program.states_cut_by_rows())
        for k, entry in sd["state"].items():
            for sname, t in entry.items():
                if sname == "step":
                    continue
                if not isinstance(t, DTensor):
                    raise AssertionError(f"{name}: state `{sname}` of parameter {k} is {type(t).__name__}, not a DTensor")
                want = [Replicate()] if t.dim() == 0 else [Shard(0)] if sname in cut else [Shard(0), Replicate()]
                if t.placements[0] not in want:
                    raise AssertionError(f"{name}: state `{sname}` of parameter {k} is placed {t.placements}")
        dcp.save({"model": bag.state_dict(), "optim": sd}, checkpoint_id=os.path.join(path, name))
    done()


def dcp_resume(rank, world, port, path, zero):
    """Loads the checkpoints `dcp_save` wrote (at another world size) into a fresh sharded
    model and optimizer, steps three more times, and compares with six steps in one process."""
    import torch.distributed.checkpoint as dcp

    mesh = init(rank, world, port)
    for name, hypers in DCP_CASES:
        bag, opt = _sharded_run(mesh, name, hypers, [], zero)
        sd = {"model": bag.state_dict(), "optim": opt.state_dict()}
        dcp.load(sd, checkpoint_id=os.path.join(path, name))
        bag.load_state_dict(sd["model"])
        opt.load_state_dict(sd["optim"])
        for step in range(3, 6):
            for p, g in zip(bag.parameters(), grads(step)):
                p.grad = g.clone() if zero else distribute_tensor(g, mesh, [Shard(0)])
            opt.step()
        ref = Bag()
        ref_opt = gdc.torch.Optimizer(gdc.compile(os.path.join(OPTIMIZERS, f"{name}.gd")), ref.named_parameters(), roles=ROLES, threads=1, **hypers)
        for step in range(6):
            for p, g in zip(ref.parameters(), grads(step)):
                p.grad = g.clone()
            ref_opt.step()
        for (pname, pr), ps in zip(ref.named_parameters(), bag.parameters()):
            check_equal(f"{name} resumed at world {world}, `{pname}`", full(ps), pr.detach(), name)
    done()


def fsdp_non_finite(rank, world, port):
    """A NaN in one rank's shard (FSDP2) or slice (zero=True): under "error" every rank raises
    and nothing changes on any rank; under "skip_step" every rank skips; for an elementwise
    and a reducing program."""
    mesh = init(rank, world, port)
    for zero in (False, True):
        for name in ("adamw", "lamb"):
            program = gdc.compile(os.path.join(OPTIMIZERS, f"{name}.gd"))
            for policy in ("error", "skip_step"):
                what = f"{'zero' if zero else 'fsdp2'} {name} {policy}"
                bag = Bag()
                if not zero:
                    fully_shard(bag, mesh=mesh)
                opt = gdc.torch.Optimizer(program, bag.named_parameters(), roles=ROLES, nonfinite=policy, threads=1, zero=zero)
                gs = grads(0)
                gs[1][-1, -1] = float("nan")  # the last row of h0_weight: the last rank with rows
                for p, g in zip(bag.parameters(), gs):
                    p.grad = g if zero else distribute_tensor(g, mesh, [Shard(0)])
                before = [full(p).clone() for p in bag.parameters()]
                raised = False
                try:
                    opt.step()
                except NonFiniteGradientError as e:
                    raised = True
                    if "h0_weight" not in str(e):
                        raise AssertionError(f"{what}: the error does not name the parameter: {e}") from None
                if raised != (policy == "error"):
                    raise AssertionError(f"{what}: rank {rank} raised={raised}")
                if policy == "skip_step" and opt.skipped_steps != 1:
                    raise AssertionError(f"{what}: skipped_steps {opt.skipped_steps} on rank {rank}")
                for p, b in zip(bag.parameters(), before):
                    if not torch.equal(full(p), b):
                        raise AssertionError(f"{what}: a parameter changed on a step with a NaN gradient")
    done()


def ddp_identical(rank, world, port):
    """gdc.torch.Optimizer under DistributedDataParallel, unchanged: after every step every
    rank holds the same parameters and the same optimizer state (muon_adamw: Muon on the
    hidden matrices, AdamW on the rest). A second DDP model stepped with zero=True (ZeRO-1)
    holds, on every rank, bit for bit the parameters of the first."""
    init(rank, world, port)
    path = os.path.join(OPTIMIZERS, "muon_adamw.gd")

    def model():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        return m, torch.nn.parallel.DistributedDataParallel(m)

    model_a, ddp = model()
    model_z, ddp_z = model()
    opt = gdc.torch.Optimizer(path, ddp.named_parameters(), roles=gdc.torch.infer_roles(ddp), threads=1)
    opt_z = gdc.torch.Optimizer(path, ddp_z.named_parameters(), roles=gdc.torch.infer_roles(ddp_z), threads=1, zero=True)
    g = torch.Generator().manual_seed(rank)
    for step in range(5):
        x, y = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
        for o, d in ((opt, ddp), (opt_z, ddp_z)):
            o.zero_grad()
            torch.nn.functional.mse_loss(d(x), y).backward()
            o.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model_a.parameters()])
        sd = opt.state_dict()
        state = torch.cat([t.reshape(-1) for k in sorted(sd["state"]) for _, t in sorted(sd["state"][k].items())])
        for what, t in (("parameters", flat), ("state", state)):
            every = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(every, t)
            for r, other in enumerate(every):
                if not torch.equal(other, t):
                    raise AssertionError(f"step {step + 1}: rank {r}'s {what} differ from rank {rank}'s")
        flat_z = torch.cat([p.detach().reshape(-1) for p in model_z.parameters()])
        if not torch.equal(flat_z, flat):
            diff = (flat_z - flat).abs().max().item()
            raise AssertionError(f"step {step + 1}: the zero=True model differs from the plain one by {diff:.3e}")
    done()


GPT_STEPS = 50
GPT_BATCH = 12  # splits evenly over 1, 2 and 3 ranks


def _gpt_losses(rank, world, mesh, name, hypers):
    """The global loss at each of GPT_STEPS steps of the tiny GPT of test_gpt.py trained
    with `name`: every rank takes its slice of the same batch, FSDP2 averages the gradients
    (one process when `mesh` is None)."""
    import sys

    sys.path.insert(0, os.path.join(OPTIMIZERS, "..", "python"))
    import tiny_gpt

    corpus = tiny_gpt.Corpus.load()
    model = tiny_gpt.TinyGPT(tiny_gpt.GPTConfig(vocab_size=corpus.vocab_size, ctx=32), seed=0)
    roles = gdc.torch.infer_roles(model)
    if mesh is not None:
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = gdc.torch.Optimizer(os.path.join(OPTIMIZERS, f"{name}.gd"), model.named_parameters(), roles=roles, threads=1, **hypers)
    batches = tiny_gpt.BatchSampler(corpus.train, batch=GPT_BATCH, ctx=32, seed=0)
    per = GPT_BATCH // world
    losses = []
    for _ in range(GPT_STEPS):
        x, y = batches.next()
        x, y = x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
        total = loss.detach().clone()
        if mesh is not None:
            dist.all_reduce(total)
        losses.append(total.item() / world)
    return losses


# The worst per-step relative loss difference allowed between the FSDP2 run and one process
# (see test_distributed.py::test_fsdp2_tiny_gpt_losses_equal_one_process). Measured: adamw
# 6.8e-6 at world 2, 2.1e-5 at world 3; muon_adamw 2.4e-7 and 2.5e-7 (2026-12-06). 1% more
# lr moves the single-process losses by ~1e-2 (test_gpt.py), 100x the bound. Muon runs its
# Newton-Schulz products in float32 here: with bfloat16 operands (muon.gd's default) the
# gradients' float32 differences between a reduce-scatter and one process's sum flip operand
# roundings, and the losses differ by 3e-4 to 5e-4 (measured, world 2 and 3), which would
# hide a sharding bug.
GPT_RTOL = {"adamw": 1e-4, "muon_adamw": 1e-4}
GPT_CASES = [
    ("adamw", {"lr": 3e-3, "weight_decay": 0.01}),
    ("muon_adamw", {"muon.lr": 0.02, "adamw.lr": 3e-3, "adamw.beta2": 0.95, "muon.ns_precision": "f32"}),
]


def fsdp_gpt(rank, world, port):
    """FSDP2 training of the tiny GPT gives the single-process losses for GPT_STEPS steps."""
    mesh = init(rank, world, port)
    for name, hypers in GPT_CASES:
        sharded = _gpt_losses(rank, world, mesh, name, hypers)
        single = _gpt_losses(0, 1, None, name, hypers)
        rel = [abs(a - b) / abs(b) for a, b in zip(sharded, single)]
        worst = max(rel)
        if rank == 0:
            print(f"{name} world {world}: worst per-step relative loss difference {worst:.3e}; loss {single[0]:.4f} -> {single[-1]:.4f}")
        if worst > GPT_RTOL[name] or not single[-1] < 0.8 * single[0]:
            raise AssertionError(f"{name} world {world}: losses differ by {worst:.3e} (bound {GPT_RTOL[name]:.0e}), {sharded[-5:]} vs {single[-5:]}")
    done()
