"""gdc.torch under FSDP2: parameters that `torch.distributed.fsdp.fully_shard` shards
(DTensors placed `Shard(0)` on a one-dimensional device mesh), stepped by the full algorithm,
never a local-shard approximation.

- A parameter the program steps elementwise (`Program.elementwise`: AdamW, Lion, SGD, ...)
  is stepped on its local shard, in place, with no communication; a rank whose shard is
  empty steps nothing for it. Its state lives on the shard's rank, 1/N of the whole.
- Any other parameter (a norm over the parameter, factored statistics, matrix products:
  LAMB, Adafactor, Muon, Shampoo, SOAP) has one owner rank, chosen by a balanced plan
  (largest first, each to the least loaded rank; the cost of a matrix is rows * cols *
  min(rows, cols), its products' FLOPs up to a constant). Each step gathers the parameter's
  and gradient's shards to the owner (`torch.distributed.gather`, one call per owner for all
  its parameters), the owner steps them whole with its state, and scatters the new shards
  back (`torch.distributed.scatter`, one call per owner). Its state lives on the owner.
- The non-finite policy is agreed by every rank before anything steps: each counts its
  shards' NaN and infinity elements and one all-reduce sums them, so under
  `nonfinite="error"` every rank raises and under `"skip_step"` every rank skips.

Every rank must call `step` with gradients for the same parameters (FSDP2 guarantees it).
"""

import torch
import torch.distributed as dist

from gdc import _native
from gdc.errors import GdcError, TensorError

try:
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # torch without torch.distributed.tensor
    DTensor = None
    Shard = None


def is_dtensor(t):
    return DTensor is not None and isinstance(t, DTensor)


def mesh_of(params):
    """The device mesh the parameters are sharded over, or None when none is a DTensor.
    Refuses a mix of DTensors and plain tensors, several meshes, and layouts other than
    FSDP2's `Shard(0)` on one mesh dimension. `params` are (name, tensor) pairs."""
    mesh = None
    plain = None
    for name, p in params:
        if not is_dtensor(p):
            plain = plain or name
            continue
        if p.device_mesh.ndim != 1 or len(p.placements) != 1 or p.placements[0] != Shard(0):
            raise TensorError(
                f"parameter `{name}` is a DTensor placed {p.placements} on a {p.device_mesh.ndim}-D mesh; gdc steps "
                "DTensors as FSDP2's fully_shard lays them out: Shard(0) on a one-dimensional mesh"
            )
        if mesh is None:
            mesh = p.device_mesh
        elif p.device_mesh != mesh:
            raise TensorError(f"parameter `{name}` is on another device mesh than the others; give one mesh's parameters")
    if mesh is not None and plain is not None:
        raise TensorError(
            f"parameter `{plain}` is a plain tensor among DTensors: shard every parameter the optimizer steps with "
            "fully_shard, or step the others with an optimizer of their own"
        )
    return mesh


def owner_plan(costs, world):
    """An owner rank for each cost: largest first, each to the least loaded rank (ties to the
    lower index and rank), so every rank computes the same plan."""
    load = [0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += costs[i]
    return owners


def matrix_cost(shape):
    numel = 1
    for d in shape:
        numel *= d
    if len(shape) >= 2:
        rows, cols = shape[-2], shape[-1]
        return numel * min(rows, cols)
    return numel


class _Layout:
    """How torch.chunk (FSDP2's Shard(0)) cuts a parameter of `shape` over `world` ranks."""

    def __init__(self, shape, world):
        self.shape = tuple(shape)
        rows = shape[0] if shape else 1
        self.rest = 1
        for d in shape[1:]:
            self.rest *= d
        self.chunk = -(-rows // world)
        self.rows = [max(0, min(self.chunk, rows - r * self.chunk)) for r in range(world)]
        # Every rank's shard padded to the same length, as gather and scatter need.
        self.padded = self.chunk * self.rest

    def numel(self, r):
        return self.rows[r] * self.rest

    def start(self, r):
        return r * self.chunk * self.rest


class ShardedBinding:
    """The parameters of one param group that step together under FSDP2: the elementwise
    ones on their local shards (one native stepper over this rank's non-empty shards), the
    others whole on their owners (one native stepper over the parameters this rank owns)."""

    dtype = torch.float32

    def __init__(self, opt, group_index, indices, mesh):
        self.group_index = group_index
        self.indices = indices
        group = opt.param_groups[group_index]
        self.params = [group["params"][i] for i in indices]
        self.names = [opt._name_of(group_index, i) for i in indices]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.group = mesh.get_group()
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.layouts = [_Layout(s, self.world) for s in self.shapes]
        for name, p in zip(self.names, self.params):
            if p.dtype != torch.float32:
                raise TensorError(
                    f"parameter `{name}` is {p.dtype}: under FSDP2 gdc steps float32 sharded parameters (keep them in "
                    "float32 and compute in bf16 with fully_shard's MixedPrecisionPolicy)"
                )
        program = opt.program
        specs = [opt._spec_of(name, p) for name, p in zip(self.names, self.params)]
        elementwise = program.elementwise(specs)
        whole = [k for k, e in enumerate(elementwise) if not e]
        if whole and program.reduces_across_params:
            raise GdcError(
                f"optimizer `{program.name}` folds a value over every parameter (global_norm) and steps "
                f"`{self.names[whole[0]]}` whole: under FSDP2 gdc does not yet combine such a value across the ranks "
                "that own parameters; use it without fully_shard, or clip with torch.nn.utils.clip_grad_norm_ before "
                "the step and a program without the clip"
            )
        # This rank's non-empty shards of the elementwise parameters.
        self.local = [k for k, e in enumerate(elementwise) if e and self.layouts[k].numel(self.rank) > 0]
        self.local_stepper = None
        if self.local:
            local_specs = []
            for k in self.local:
                name, shape, role, base = specs[k]
                local_specs.append((name, [self.layouts[k].rows[self.rank]] + shape[1:], role, base))
            self.local_stepper = self._stepper(opt, local_specs)
        # The whole parameters, each with its owner.
        self.whole = whole
        owners = owner_plan([matrix_cost(self.shapes[k]) for k in whole], self.world)
        self.owner = dict(zip(whole, owners))
        self.owned = [k for k in whole if self.owner[k] == self.rank]
        self.owned_stepper = self._stepper(opt, [specs[k] for k in self.owned]) if self.owned else None
        self.hypers = {}
        self.skipped_steps = 0

    @staticmethod
    def _stepper(opt, specs):
        stepper = _native.Stepper(opt.program, specs, opt._threads)
        # The ranks agree on the non-finite policy before stepping (`first_non_finite`).
        stepper.set_nonfinite("propagate")
        return stepper

    def steppers(self):
        return [s for s in (self.local_stepper, self.owned_stepper) if s is not None]

    def check(self, opt):
        """Raises TensorError for a parameter or gradient this binding cannot step."""
        group = opt.param_groups[self.group_index]
        for i, p, name, shape in zip(self.indices, self.params, self.names, self.shapes):
            if group["params"][i] is not p:
                raise TensorError(f"parameter `{name}` was replaced in its param group after the first step")
            g = p.grad
            if tuple(p.shape) != shape:
                raise TensorError(f"parameter `{name}` has shape {tuple(p.shape)}, bound at {shape}")
            if not is_dtensor(g) or g.placements != p.placements or tuple(g.shape) != shape:
                raise TensorError(
                    f"the gradient of `{name}` must be a DTensor placed like its parameter ({p.placements}, shape "
                    f"{shape}); got {type(g).__name__} {getattr(g, 'placements', '')} {tuple(g.shape)}"
                )
            lp, lg = p.to_local(), g.to_local()
            if lg.dtype != torch.float32:
                raise TensorError(f"the gradient of `{name}` is {lg.dtype}, its parameter float32")
            if not lp.is_cpu or not lg.is_cpu:
                raise GdcError(
                    f"parameter `{name}` is on {lp.device}: gdc.torch steps CPU tensors only for now (CUDA tensors are "
                    "not yet supported)"
                )
            if not lp.is_contiguous() or not lg.is_contiguous():
                raise TensorError(f"the local shard of `{name}` or of its gradient is not contiguous")

    def non_finite(self):
        """(count of non-finite gradient elements in this rank's shards, first such local index)."""
        count = 0
        first = len(self.params)
        for k, p in enumerate(self.params):
            lg = p.grad.to_local()
            if lg.numel() == 0:
                continue
            bad = int((~torch.isfinite(lg)).sum())
            if bad:
                count += bad
                first = min(first, k)
        return count, first

    def step(self, hypers):
        for name, value in hypers:
            for s in self.steppers():
                s.set_hyper(name, value)
            self.hypers[name] = value
        if self.local_stepper is not None:
            ps, gs = [], []
            for k in self.local:
                lp, lg = self.params[k].to_local(), self.params[k].grad.to_local()
                ps.append((lp.data_ptr(), lp.numel()))
                gs.append((lg.data_ptr(), lg.numel()))
            self.local_stepper.step(ps, gs)
        if self.whole:
            self._step_whole()

    def _step_whole(self):
        """Gathers each whole parameter and its gradient to its owner, steps the owned ones
        there as one fused pass, and scatters the new shards back."""
        r, world = self.rank, self.world
        by_owner = [[k for k in self.whole if self.owner[k] == o] for o in range(world)]
        gathered = {}
        for o, ks in enumerate(by_owner):
            if not ks:
                continue
            send = torch.zeros(sum(2 * self.layouts[k].padded for k in ks))
            at = 0
            for k in ks:
                lay = self.layouts[k]
                n = lay.numel(r)
                send[at : at + n] = self.params[k].to_local().reshape(-1)
                send[at + lay.padded : at + lay.padded + n] = self.params[k].grad.to_local().reshape(-1)
                at += 2 * lay.padded
            recv = [torch.empty_like(send) for _ in range(world)] if o == r else None
            dist.gather(send, recv, dst=dist.get_global_rank(self.group, o), group=self.group)
            if o == r:
                gathered = recv
        fulls = {}
        if self.owned:
            ps, gs = [], []
            at = 0
            for k in self.owned:
                lay = self.layouts[k]
                p = torch.empty(self.shapes[k])
                g = torch.empty(self.shapes[k])
                pf, gf = p.view(-1), g.view(-1)
                for src in range(world):
                    n = lay.numel(src)
                    s = lay.start(src)
                    pf[s : s + n] = gathered[src][at : at + n]
                    gf[s : s + n] = gathered[src][at + lay.padded : at + lay.padded + n]
                at += 2 * lay.padded
                fulls[k] = (p, g)
                ps.append((p.data_ptr(), p.numel()))
                gs.append((g.data_ptr(), g.numel()))
            self.owned_stepper.step(ps, gs)
        for o, ks in enumerate(by_owner):
            if not ks:
                continue
            recv = torch.empty(sum(self.layouts[k].padded for k in ks))
            parts = None
            if o == r:
                parts = []
                for dst in range(world):
                    out = torch.zeros_like(recv)
                    at = 0
                    for k in ks:
                        lay = self.layouts[k]
                        n, s = lay.numel(dst), lay.start(dst)
                        out[at : at + n] = fulls[k][0].view(-1)[s : s + n]
                        at += lay.padded
                    parts.append(out)
            dist.scatter(recv, parts, src=dist.get_global_rank(self.group, o), group=self.group)
            at = 0
            for k in ks:
                lay = self.layouts[k]
                n = lay.numel(r)
                if n:
                    self.params[k].to_local().view(-1).copy_(recv[at : at + n])
                at += lay.padded


def agree_non_finite(bindings, group):
    """(total non-finite gradient elements over every rank, name of the first bad parameter
    or None), the same on every rank: one all-reduce of the counts, one of the first index."""
    counts = torch.zeros(1, dtype=torch.float64)
    firsts = []
    for b in bindings:
        c, f = b.non_finite()
        counts[0] += c
        firsts.append(f if c else len(b.params))
    dist.all_reduce(counts, group=group)
    if counts[0] == 0:
        return 0, None
    first = torch.tensor(firsts, dtype=torch.int64)
    dist.all_reduce(first, op=dist.ReduceOp.MIN, group=group)
    for b, f in zip(bindings, first.tolist()):
        if f < len(b.params):
            return int(counts[0]), b.names[f]
    return int(counts[0]), None
