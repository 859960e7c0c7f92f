"""gdc.torch under FSDP2 and ZeRO-1: parameters that `torch.distributed.fsdp.fully_shard` shards
(DTensors placed `Shard(0)` on a one-dimensional device mesh), stepped by the full algorithm,
never a local-shard approximation.

- A parameter the program steps elementwise (`Program.locality`: AdamW, Lion, SGD, ...)
  is stepped on its local shard, in place, with no communication; a rank whose shard is
  empty steps nothing for it. Its state lives on the shard's rank, 1/N of the whole.
- A parameter whose step reduces across rows (LAMB's norms, global-norm clipping,
  Adafactor's column statistics and RMS) is stepped on its local shard too, each reducing
  kernel's partials (scalars, and a vector per column reduction) summed over the ranks by
  one all-reduce. State over columns alone (Adafactor's `col_var`) is the same on every rank.
- Any other parameter (matrix products: Muon, Shampoo, SOAP) has one owner rank, chosen by
  a balanced plan (largest first, each to the least loaded rank; the cost of a matrix is
  rows * cols * min(rows, cols), its products' FLOPs up to a constant). Each step gathers
  the parameter's and gradient's shards to the owner (`torch.distributed.gather`, one call
  per owner for all its parameters), the owner steps them whole with its state, and
  scatters the new shards back (`torch.distributed.scatter`, one call per owner). Its
  state lives on the owner.
- The non-finite policy is agreed by every rank before anything steps: each counts its
  shards' NaN and infinity elements and one all-reduce sums them, so under
  `nonfinite="error"` every rank raises and under `"skip_step"` every rank skips.

ZeRO-1 (`zero=True` over a replicated model, `ReplicatedBinding`) follows the same plan over
slices of the whole parameters each rank holds: the slices and owned parameters step in
place (an owner needs no gather), then every rank broadcasts what it updated.

Every rank must call `step` with gradients for the same parameters (FSDP2 and DDP guarantee
it).
"""

import torch
import torch.distributed as dist

from gdc import _native, _state
from gdc.errors import GdcError, TensorError

try:
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # torch without torch.distributed.tensor
    DTensor = None
    Replicate = None
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
    """The parameters of one param group that step together under FSDP2, by locality
    (`Program.locality`): the elementwise ones on their local shards alone, the reducing
    ones (whole-tensor norms, `global_norm`) on their local shards with each reducing
    kernel's partials all-reduced (`Stepper.step_combined`), the others whole on their
    owners. Every rank binds the same shards (some empty) in the same order, so the local and
    reducing steppers make the same calls and collectives on every rank."""

    dtype = torch.float32

    def __init__(self, opt, group_index, indices, mesh):
        self.group_index = group_index
        self.indices = indices
        group = opt.param_groups[group_index]
        self.params = [group["params"][i] for i in indices]
        self.names = [opt._name_of(group_index, i) for i in indices]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.mesh = mesh
        self.group = mesh.get_group()
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.layouts = [_Layout(s, self.world) for s in self.shapes]
        for name, p in zip(self.names, self.params):
            if p.dtype != torch.float32:
                raise TensorError(
                    f"parameter `{name}` is {p.dtype}: with sharded state (FSDP2 or zero=True) gdc steps float32 "
                    "parameters (keep them in float32 and compute in bf16 with fully_shard's MixedPrecisionPolicy or "
                    "torch.autocast)"
                )
        program = opt.program
        self.program = program
        self.cut_by_rows = set(program.states_cut_by_rows())
        specs = [opt._spec_of(name, p) for name, p in zip(self.names, self.params)]
        locality = program.locality(specs)
        whole = [k for k, loc in enumerate(locality) if loc == "whole"]
        if program.reduces_across_params:
            # A value folded over every parameter spans the whole group: every parameter
            # takes part in the combined step, none can be stepped apart on an owner.
            if whole:
                raise GdcError(
                    f"optimizer `{program.name}` folds a value over every parameter (global_norm) and steps "
                    f"`{self.names[whole[0]]}` only whole (matrix products): under FSDP2 gdc "
                    "combines such a value across ranks only for parameters stepped by shards; use it without "
                    "fully_shard, or clip with torch.nn.utils.clip_grad_norm_ before the step and a program without "
                    "the clip"
                )
            locality = ["reduces"] * len(locality)
        # Every rank's shards, also the empty ones, of the parameters stepped by shards.
        self.local = [k for k, loc in enumerate(locality) if loc == "elementwise"]
        self.reducing = [k for k, loc in enumerate(locality) if loc == "reduces"]
        self.local_stepper = self._stepper(opt, specs, self.local)
        self.reducing_stepper = self._stepper(opt, specs, self.reducing)
        # The whole parameters, each with its owner.
        self.whole = whole
        owners = owner_plan([matrix_cost(self.shapes[k]) for k in whole], self.world)
        self.owner = dict(zip(whole, owners))
        self.owned = [k for k in whole if self.owner[k] == self.rank]
        self.owned_stepper = (
            _native.Stepper(opt.program, [specs[k] for k in self.owned], opt._threads) if self.owned else None
        )
        if self.owned_stepper is not None:
            self.owned_stepper.set_nonfinite("propagate")
        self.hypers = {}
        # What this rank sent, per collective: {kind: [calls, bytes]} (see `communication`).
        self.sent = {}
        self._whole_states = None

    def _shard_specs(self, specs, ks):
        out = []
        for k in ks:
            name, shape, role, base = specs[k]
            out.append((name, [self.layouts[k].rows[self.rank]] + shape[1:], role, base))
        return out

    def _stepper(self, opt, specs, ks):
        """A stepper of this rank's shards of parameters `ks` (None when there are none)."""
        if not ks:
            return None
        whole_rows = [self.shapes[k][0] if self.shapes[k] else 1 for k in ks]
        stepper = _native.Stepper(opt.program, self._shard_specs(specs, ks), opt._threads, shards=whole_rows)
        # The ranks agree on the non-finite policy before stepping (`agree_non_finite`).
        stepper.set_nonfinite("propagate")
        return stepper

    def steppers(self):
        return [s for s in (self.local_stepper, self.reducing_stepper, self.owned_stepper) if s is not None]

    def _count(self, kind, tensor):
        calls, nbytes = self.sent.get(kind, (0, 0))
        self.sent[kind] = (calls + 1, nbytes + tensor.numel() * tensor.element_size())

    def check(self, opt):
        """Raises TensorError for a parameter or gradient this binding cannot step."""
        for k, name in self._checked_params(opt):
            p, g = self.params[k], self.params[k].grad
            if not is_dtensor(g) or g.placements != p.placements or tuple(g.shape) != self.shapes[k]:
                raise TensorError(
                    f"the gradient of `{name}` must be a DTensor placed like its parameter ({p.placements}, shape "
                    f"{self.shapes[k]}); got {type(g).__name__} {getattr(g, 'placements', '')} {tuple(g.shape)}"
                )
            self._check_local(name, p.to_local(), g.to_local())

    def _checked_params(self, opt):
        """(k, name) of each parameter, after checking it is still the one bound, at its shape."""
        group = opt.param_groups[self.group_index]
        for k, (i, p, name, shape) in enumerate(zip(self.indices, self.params, self.names, self.shapes)):
            if group["params"][i] is not p:
                raise TensorError(f"parameter `{name}` was replaced in its param group after the first step")
            if tuple(p.shape) != shape:
                raise TensorError(f"parameter `{name}` has shape {tuple(p.shape)}, bound at {shape}")
            yield k, name

    @staticmethod
    def _check_local(name, lp, lg):
        if lg.dtype != torch.float32:
            raise TensorError(f"the gradient of `{name}` is {lg.dtype}, its parameter float32")
        if not lp.is_cpu or not lg.is_cpu:
            raise GdcError(
                f"parameter `{name}` is on {lp.device}: gdc.torch steps CPU tensors only for now (CUDA tensors are "
                "not yet supported)"
            )
        if not lp.is_contiguous() or not lg.is_contiguous():
            raise TensorError(f"the local shard of `{name}` or of its gradient is not contiguous")

    def _local(self, k):
        """This rank's shard of parameter k and of its gradient (possibly empty)."""
        p = self.params[k]
        return p.to_local(), p.grad.to_local()

    def _checked_grads(self):
        """(k, gradient part) that this rank checks for non-finite elements: together over
        every rank, each element of every gradient once."""
        for k in range(len(self.params)):
            yield k, self._local(k)[1]

    def non_finite(self):
        """(count of non-finite gradient elements in this rank's shards, first such local index)."""
        count = 0
        first = len(self.params)
        for k, lg in self._checked_grads():
            if lg.numel() == 0:
                continue
            bad = int((~torch.isfinite(lg)).sum())
            if bad:
                count += bad
                first = min(first, k)
        return count, first

    def _regions(self, ks):
        ps, gs = [], []
        for k in ks:
            lp, lg = self._local(k)
            ps.append((lp.data_ptr(), lp.numel()))
            gs.append((lg.data_ptr(), lg.numel()))
        return ps, gs

    def step(self, hypers):
        for name, value in hypers:
            for s in self.steppers():
                s.set_hyper(name, value)
            self.hypers[name] = value
        if self.local_stepper is not None:
            self.local_stepper.step(*self._regions(self.local))
        if self.reducing_stepper is not None:
            self.reducing_stepper.step_combined(*self._regions(self.reducing), self._combine)
        if self.whole:
            self._step_whole()

    def _combine(self, values, kinds):
        """The partials of one reducing kernel combined over every rank: one all-reduce of
        the sums (and of NaN flags of the maxima), one of the maxima (of magnitudes, or of
        values) when there are any. Every rank passes the same kinds in the same order."""
        if not values:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        is_sum = torch.tensor([k == "sum" for k in kinds])
        maxima = t[~is_sum]
        sums = torch.cat([t[is_sum], maxima.isnan().to(torch.float64)])
        self._count("all_reduce", sums)
        dist.all_reduce(sums, group=self.group)
        out = torch.empty_like(t)
        n_sum = int(is_sum.sum())
        out[is_sum] = sums[:n_sum]
        if maxima.numel():
            # -inf (a shard with no elements of a maximum) stays -inf.
            maxima = maxima.nan_to_num(nan=0.0, posinf=float("inf"), neginf=float("-inf"))
            self._count("all_reduce", maxima)
            dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=self.group)
            maxima[sums[n_sum:] > 0] = float("nan")
            out[~is_sum] = maxima
        return out.tolist()

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
                lp, lg = self._local(k)
                send[at : at + n] = lp.reshape(-1)
                send[at + lay.padded : at + lay.padded + n] = lg.reshape(-1)
                at += 2 * lay.padded
            recv = [torch.empty_like(send) for _ in range(world)] if o == r else None
            if o != r:
                self._count("gather", send)
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
                    if dst != r:
                        self._count("scatter", out)
            dist.scatter(recv, parts, src=dist.get_global_rank(self.group, o), group=self.group)
            at = 0
            for k in ks:
                lay = self.layouts[k]
                n = lay.numel(r)
                if n:
                    self._local(k)[0].view(-1).copy_(recv[at : at + n])
                at += lay.padded

    # ----- state as DTensors ------------------------------------------------------------

    def _layout_of_whole(self):
        """{k: [(state, shape)]} of every whole parameter's state, the same on every rank
        (each owner says its parameters', one all_gather_object at the first need)."""
        if self._whole_states is None:
            mine = {}
            if self.owned_stepper is not None:
                mine = _stacked_layout(self.owned_stepper, self.owned, self.shapes)
            every = [None] * self.world
            dist.all_gather_object(every, mine, group=self.group)
            self._whole_states = {}
            for part in every:
                self._whole_states.update(part)
        return self._whole_states

    def _steppers_by_kind(self):
        return [(self.local_stepper, self.local), (self.reducing_stepper, self.reducing)]

    def state(self):
        """{k: {state name: DTensor}} for every parameter: the state of a parameter stepped
        by shards is this rank's shard of it; an owner's state is cut by torch.chunk along
        its first dimension and scattered, so every state is a DTensor placed Shard(0) on
        the parameters' mesh (a scalar state Replicate). Collective: every rank calls it."""
        out = {k: {} for k in range(len(self.params))}
        for stepper, ks in self._steppers_by_kind():
            if stepper is None:
                continue
            for k, states in _stacked_values(stepper, ks, [self._shard_shape(k) for k in ks]).items():
                for sname, t in states.items():
                    out[k][sname] = self._dtensor(t, self._full_state_shape(k, sname, t))
        layout = self._layout_of_whole()
        owned = {}
        if self.owned_stepper is not None:
            owned = _stacked_values(self.owned_stepper, self.owned, [self.shapes[k] for k in self.owned])
        for k in self.whole:
            o = dist.get_global_rank(self.group, self.owner[k])
            for sname, shape in layout[k]:
                full = owned.get(k, {}).get(sname) if self.owner[k] == self.rank else None
                out[k][sname] = self._scatter_state(full, shape, o)
        return out

    def _shard_shape(self, k):
        return [self.layouts[k].rows[self.rank]] + list(self.shapes[k][1:])

    def _full_state_shape(self, k, sname, t):
        """The whole shape of state `sname` (this rank's part `t`) of a parameter stepped by
        shards when each shard holds its rows of it (`Program.states_cut_by_rows`: like the
        parameter, `[rows]`); None when every shard holds it whole and alike (a scalar, a
        `[cols]` vector of combined column statistics): Replicate."""
        if sname in self.cut_by_rows and t.dim() > 0:
            return [self.shapes[k][0]] + list(t.shape[1:])
        return None

    def _dtensor(self, local, full_shape):
        if full_shape is None:
            return DTensor.from_local(local, self.mesh, [Replicate()], run_check=False)
        return DTensor.from_local(
            local.contiguous(), self.mesh, [Shard(0)], run_check=False, shape=torch.Size(full_shape),
            stride=torch.empty(full_shape, device="meta").stride(),
        )

    def _scatter_state(self, full, shape, src):
        """A whole state of `shape` held by rank `src` (`full` there) as a DTensor placed
        Shard(0) (Replicate for a scalar)."""
        if len(shape) == 0:
            t = full.clone() if full is not None else torch.empty(())
            dist.broadcast(t, src=src, group=self.group)
            return DTensor.from_local(t, self.mesh, [Replicate()], run_check=False)
        lay = _Layout(shape, self.world)
        recv = torch.empty(lay.padded)
        parts = None
        if full is not None:
            flat = full.reshape(-1)
            parts = []
            for dst in range(self.world):
                out = torch.zeros(lay.padded)
                n, s = lay.numel(dst), lay.start(dst)
                out[:n] = flat[s : s + n]
                parts.append(out)
        dist.scatter(recv, parts, src=src, group=self.group)
        local = recv[: lay.numel(self.rank)].reshape([lay.rows[self.rank]] + list(shape[1:]))
        return self._dtensor(local, list(shape))

    def counters(self):
        """(step, skipped steps, globals) of the binding, the same on every rank: from the
        first rank that holds a stepper (one all_gather_object)."""
        mine = None
        if self.steppers():
            meta, _ = self.steppers()[0].snapshot()
            mine = (int(meta["step"]), int(meta["skipped_steps"]), dict(meta["globals"]))
        every = [None] * self.world
        dist.all_gather_object(every, mine, group=self.group)
        return next((c for c in every if c is not None), (0, 0, {}))

    def restore(self, info, states, hypers):
        """Restores `states` ({k: {state name: DTensor}}, as `state` gives them, possibly from
        another world size) and the counters of `info` into fresh steppers. Collective: every
        whole parameter's state is gathered (full_tensor) on every rank, its owner keeps it."""
        keep = []
        restores = []
        for stepper, ks in self._steppers_by_kind():
            if stepper is None:
                continue
            tensors = []
            for k in ks:
                for sname, t in states.get(k, {}).items():
                    local = t.to_local() if is_dtensor(t) else t
                    local = local.detach().to("cpu", torch.float32).contiguous()
                    keep.append(local)
                    tensors.append((self.names[k], sname, list(local.shape), local.data_ptr(), local.numel()))
            specs = [(self.names[k], self._shard_shape(k)) for k in ks]
            restores.append((stepper, specs, tensors))
        tensors = []
        for k in self.whole:
            for sname, t in sorted(states.get(k, {}).items()):
                whole = (t.full_tensor() if is_dtensor(t) else t).detach().to("cpu", torch.float32).contiguous()
                if self.owner[k] != self.rank:
                    continue
                keep.append(whole)
                i = self.owned.index(k)
                tensors.extend(_state.unstack(self.owned_stepper.members(), i, self.names[k], sname, whole, self.shapes[k]))
        if self.owned_stepper is not None:
            restores.append((self.owned_stepper, [(self.names[k], list(self.shapes[k])) for k in self.owned], tensors))
        for stepper, specs, tensors in restores:
            _state.restore(stepper, info, info, specs, hypers, tensors)
        del keep


class ReplicatedBinding(ShardedBinding):
    """ZeRO-1 for a replicated model (DistributedDataParallel, or any model every rank holds
    whole): the plan of `ShardedBinding` over slices instead of DTensor shards. Each rank
    steps, in place, its torch.chunk slice (along the first dimension, as FSDP2 would shard
    it) of every parameter stepped by shards, and every parameter it owns whole; the owners
    need no gather, every rank already holds the whole gradient. Then each rank broadcasts
    what it updated (its slices and its matrices), which makes every rank's parameters whole
    and identical again. The state is sharded as under FSDP2, so its state
    dict is the same DTensors (Shard(0) on the process group's mesh)."""

    def check(self, opt):
        for k, name in self._checked_params(opt):
            p, g = self.params[k], self.params[k].grad
            if is_dtensor(p) or is_dtensor(g):
                raise TensorError(
                    f"parameter `{name}` or its gradient is a DTensor: zero=True shards the state of a replicated "
                    "model; FSDP2 (fully_shard) shards it already, drop zero=True"
                )
            if tuple(g.shape) != self.shapes[k]:
                raise TensorError(f"the gradient of `{name}` has shape {tuple(g.shape)}, its parameter {self.shapes[k]}")
            self._check_local(name, p, g)

    def _local(self, k):
        lay = self.layouts[k]
        n, at = lay.numel(self.rank), lay.start(self.rank)
        shape = self._shard_shape(k)
        p = self.params[k]
        return p.view(-1)[at : at + n].view(shape), p.grad.view(-1)[at : at + n].view(shape)

    def _checked_grads(self):
        for k in self.local + self.reducing:
            yield k, self._local(k)[1]
        for k in self.owned:
            yield k, self.params[k].grad

    def step(self, hypers):
        super().step(hypers)
        self._exchange()

    def _step_whole(self):
        """Steps the parameters this rank owns in place (it holds their whole gradients)."""
        if self.owned:
            ps, gs = [], []
            for k in self.owned:
                p = self.params[k]
                ps.append((p.data_ptr(), p.numel()))
                gs.append((p.grad.data_ptr(), p.numel()))
            self.owned_stepper.step(ps, gs)

    def _segment(self, o):
        """[(k, start, count)]: the elements of the flattened parameters rank `o` updates,
        its slices of those stepped by shards, then the whole parameters it owns."""
        out = [(k, self.layouts[k].start(o), self.layouts[k].numel(o)) for k in self.local + self.reducing]
        out += [(k, 0, self.params[k].numel()) for k in self.whole if self.owner[k] == o]
        return [(k, at, n) for k, at, n in out if n]

    # Parts of fewer elements travel packed in one buffer per rank: on gloo each broadcast
    # costs about 0.2 ms beyond its bytes (the GPT-style set of bench_distributed.py over 2
    # ranks: 145 ms with every part on its own, 92 ms with these packed).
    PACKED_BELOW = 1 << 16

    def _exchange(self):
        """Every rank's updated elements to every rank, all broadcasts in flight together:
        each large part straight from and into its parameter (no copy), the small ones of
        each rank packed into one buffer."""
        if self.world == 1:
            return
        pending = []
        packed = []
        for o in range(self.world):
            src = dist.get_global_rank(self.group, o)
            small = []
            for k, at, n in self._segment(o):
                part = self.params[k].detach().view(-1)[at : at + n]
                if n < self.PACKED_BELOW:
                    small.append(part)
                    continue
                if o == self.rank:
                    self._count("broadcast", part)
                pending.append(dist.broadcast(part, src=src, group=self.group, async_op=True))
            if small:
                buf = torch.cat(small) if o == self.rank else torch.empty(sum(p.numel() for p in small))
                if o == self.rank:
                    self._count("broadcast", buf)
                else:
                    packed.append((small, buf))
                pending.append(dist.broadcast(buf, src=src, group=self.group, async_op=True))
        for work in pending:
            work.wait()
        for small, buf in packed:
            for part, piece in zip(small, buf.split([p.numel() for p in small])):
                part.copy_(piece)


def replicated_mesh(process_group):
    """The one-dimensional device mesh of `process_group` (None: the default group) that a
    ZeRO-1 optimizer's state DTensors are placed on. Raises GdcError when torch.distributed
    is not initialised."""
    if DTensor is None or not dist.is_available() or not dist.is_initialized():
        raise GdcError(
            "zero=True shards the optimizer state over the ranks of a process group: call "
            "torch.distributed.init_process_group first (or drop zero=True)"
        )
    from torch.distributed.device_mesh import DeviceMesh

    group = process_group if process_group is not None else dist.group.WORLD
    return DeviceMesh.from_group(group, "cpu")


def _stacked_layout(stepper, ks, shapes):
    """{k: [(state, shape)]} of a stepper's parameters (binding indices `ks`); a batch of
    matrices' states stacked under its batch dimensions, as gdc.torch shows them."""
    members = stepper.members()
    per = {}
    for member, state, shape in stepper.state_layout():
        i = next(m[1] for m in members if m[0] == member)
        k = ks[i]
        entry = per.setdefault(k, {})
        entry.setdefault(state, []).append(shape)
    out = {}
    for k, states in per.items():
        batch = list(shapes[ks.index(k)][:-2])
        out[k] = [
            (s, list(v[0]) if len(v) == 1 else batch + list(v[0])) for s, v in sorted(states.items())
        ]
    return out


def _stacked_values(stepper, ks, shapes):
    """{k: {state: tensor}} of a stepper's parameters, stacked as `_stacked_layout`: the
    values once stepped, zeros of the layout before."""
    _, tensors = stepper.snapshot()
    if not tensors:
        return {
            k: {s: torch.zeros(shape) for s, shape in states}
            for k, states in _stacked_layout(stepper, ks, shapes).items()
        }
    return {ks[i]: states for i, states in enumerate(_state.stack(stepper.members(), shapes, tensors)) if states}


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
