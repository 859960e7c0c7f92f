"""Optimizer state between the runtime's members and torch's tensors: a batched parameter
(a stack of matrices, `update(p: [..., rows, cols], g)`) is bound as one member per matrix,
and torch shows its state stacked under the parameter's batch dimensions."""

import torch

from gdc.errors import CheckpointError


def stack(members, shapes, tensors):
    """Per parameter (index into `shapes`), its state as {name: tensor} from a stepper's
    `members()` and `snapshot()` tensors (member, state, shape, bytes)."""
    member_param = {m[0]: m[1] for m in members}
    counts = {}
    for m in members:
        counts[m[1]] = counts.get(m[1], 0) + 1
    parts = [dict() for _ in shapes]
    for member, state, shape, data in tensors:
        t = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape) if data else torch.zeros(shape)
        parts[member_param[member]].setdefault(state, []).append(t)
    out = [dict() for _ in shapes]
    for i, states in enumerate(parts):
        for state, ts in states.items():
            if counts[i] == 1:
                out[i][state] = ts[0]
            else:
                out[i][state] = torch.stack(ts).reshape(list(shapes[i][:-2]) + list(ts[0].shape))
    return out


def unstack(members, i, name, state, t, shape):
    """`restore` entries (member, state, shape, address, elements) for state `state` of
    parameter `i` (named `name`, of `shape`) from its float32 contiguous tensor `t`: one
    entry, or one per matrix of a batch. The caller keeps `t` alive for the restore."""
    mine = [m for m in members if m[1] == i]
    if len(mine) == 1:
        return [(mine[0][0], state, list(t.shape), t.data_ptr(), t.numel())]
    batch = list(shape[:-2])
    if t.numel() % len(mine) != 0:
        raise CheckpointError(f"state `{state}` of `{name}` does not split into its {len(mine)} matrices")
    if list(t.shape[: len(batch)]) != batch:
        raise CheckpointError(f"state `{state}` of `{name}` has shape {tuple(t.shape)}, not led by the batch {tuple(batch)}")
    parts = t.reshape(len(mine), -1)
    inner = list(t.shape[len(batch) :])
    return [(m[0], state, inner, parts[j].data_ptr(), parts[j].numel()) for j, m in enumerate(mine)]


def restore(stepper, info, counters, specs, hypers, tensors):
    """Restores a stepper from a state dict's `gdc` entry `info` (program and optimizer),
    one binding's `counters` (step, skipped_steps, globals), its parameters' (name, shape)
    `specs`, hyperparameters and (name, state, shape, pointer, length) `tensors`."""
    stepper.restore(
        info["program_hash"],
        info["optimizer"],
        specs,
        int(counters["step"]),
        int(counters["skipped_steps"]),
        hypers,
        sorted(counters["globals"].items()),
        tensors,
    )
