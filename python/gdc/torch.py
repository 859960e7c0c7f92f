"""gdc.torch: `Optimizer`, a drop-in `torch.optim.Optimizer` that steps a compiled `.gd`
program's fused kernels in place on the tensors' own memory, and `infer_roles`, the usual
roles of a model's parameters (for policies such as Muon + AdamW, decay masks and muP).

    opt = gdc.torch.Optimizer("examples/optimizers/adamw.gd", model.named_parameters(), lr=3e-4)
    loss.backward(); opt.step(); opt.zero_grad()

Hyperparameters live in `param_groups` under their `.gd` names, so torch's LR schedulers
drive `lr` with no recompilation. A program that reads per-step inputs (K-FAC's layer
statistics, Sophia-G's Hessian sample) gets them from `step(inputs=...)` and, with
`model=`, from hooks on the model's `nn.Linear` layers; `sophia_hessian_inputs` makes
Sophia-G's. Parameters are bound lazily: at its first step, each param
group (and dtype within it) binds the parameters that have a gradient, in group order, and
steps them together from then on, as one fused pass per kernel.
"""

from collections.abc import Mapping
import functools
import math
import os

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks as _global_post_hooks
from torch.optim.optimizer import _global_optimizer_pre_hooks as _global_pre_hooks

import gdc
from gdc import _distributed, _native, _state
from gdc.errors import CheckpointError, DeviceError, GdcError, HyperparameterError, NonFiniteGradientError, TensorError

# Keys torch and its LR schedulers keep in a param group that are not hyperparameters.
_GROUP_KEYS = frozenset(
    {"params", "param_names", "initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum", "name"}
)
_POLICIES = ("propagate", "skip_step", "error")
_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
_STATE_DICT_FORMAT = "gdc-torch-1"


def _as_program(program):
    if isinstance(program, gdc.Program):
        return program
    if isinstance(program, (str, os.PathLike)):
        return gdc.compile(program)
    raise TypeError(f"program must be a gdc.Program or a path to a .gd or .gdo file, not {type(program).__name__}")


# A precision hyperparameter's names and the numbers the runtime takes for them (the bits of
# significand a matrix product's operands keep), from the language's own table.
_PRECISIONS = dict(_native.PRECISIONS)


def _precision_bits(info, value):
    """A precision hyperparameter's name (`"bf16"`) as the runtime's number (8); any other
    value unchanged."""
    if info.type == "precision" and isinstance(value, str):
        if value not in _PRECISIONS:
            raise HyperparameterError(
                f"hyperparameter `{info.name}` is a precision: \"f32\", \"tf32\" or \"bf16\", not {value!r}"
            )
        return _PRECISIONS[value]
    return value


def _runtime_value(info, value):
    """The float the runtime holds for a checked value of a hyperparameter: its precision's
    bits, or NaN for an unset (None) optional one."""
    return math.nan if value is None else float(_precision_bits(info, value))


def _check_value(program, info, name, value):
    """The float the runtime takes for `value` of hyperparameter `name`, range-checked; an
    optional hyperparameter's `None` (unset) is NaN."""
    if value is None:
        if not info.optional:
            raise HyperparameterError(f"hyperparameter `{name}` is not optional: it cannot be None")
        return math.nan
    value = _precision_bits(info, value)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise HyperparameterError(f"hyperparameter `{name}` must be a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)):
        kind = "a precision name or number" if info.type == "precision" else "a number"
        raise HyperparameterError(f"hyperparameter `{name}` must be {kind}, got {type(value).__name__}")
    value = float(value)
    program.check_hyper(name, value)
    return value


class _StateView(Mapping):
    """`optimizer.state`: for each parameter with state, a dict of copies of its state
    tensors (torch tensors, shaped as the state is) and its `step`, as torch optimizers show
    them. The runtime owns the state; writing to these copies changes nothing (use
    `load_state_dict`)."""

    def __init__(self, opt):
        self._opt = opt

    def _all(self):
        return self._opt._param_states()

    def __getitem__(self, p):
        return self._all().get(p, {})

    def __contains__(self, p):
        return p in self._all()

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())

    def __repr__(self):
        return f"<gdc optimizer state of {len(self)} parameter(s)>"


class _Binding:
    """The parameters of one param group and dtype that the runtime steps together."""

    def __init__(self, opt, group_index, dtype, indices):
        self.group_index = group_index
        self.dtype = dtype
        # Indices into the group's params, in group order.
        self.indices = indices
        group = opt.param_groups[group_index]
        self.params = [group["params"][i] for i in indices]
        self.names = [opt._name_of(group_index, i) for i in indices]
        self.shapes = [tuple(p.shape) for p in self.params]
        specs = [opt._spec_of(name, p) for name, p in zip(self.names, self.params)]
        self.stepper = _native.Stepper(opt.program, specs, opt._threads)
        self.stepper.set_nonfinite(opt._nonfinite)
        self.hypers = {}

    def members(self):
        return self.stepper.members()

    def steppers(self):
        return [self.stepper]


class Optimizer(torch.optim.Optimizer):
    """A `torch.optim.Optimizer` running a compiled `.gd` program in place.

    Args:
        program: a `gdc.Program`, or the path of a `.gd` file (compiled) or `.gdo` artifact.
        params: tensors, `(name, tensor)` pairs (`model.named_parameters()`), or param-group
            dicts as torch takes them; a group's hyperparameters apply to its parameters.
        roles: what each parameter is to the model, for policies, decay masks and muP: a dict
            name -> role (`hidden`, `embedding`, `output`, `input`, `bias`, `norm`, `other`)
            or a callable (name, tensor) -> role; `infer_roles(model)` gives the usual ones.
            Unnamed parameters are named `"<group>.<index>"`.
        base_shapes: muP base shapes, a dict name -> shape or a callable (name, tensor) -> shape.
        nonfinite: what a gradient holding NaN or infinity does: "propagate" (as torch),
            "skip_step" (nothing changes, counted in `skipped_steps`) or "error"
            (`gdc.NonFiniteGradientError`, nothing changes).
        threads: CPU worker threads (default: one per core).
        zero: ZeRO-1 for a replicated model (DistributedDataParallel): shard the optimizer
            state and the step over the ranks of `process_group` (default: the world) by
            the plan FSDP2 parameters get (slices stepped locally, matrices on balanced
            owners), then all-gather the updated parameters; every rank ends the step with
            the same parameters, and its state dict is sharded like FSDP2's (save it with
            torch.distributed.checkpoint).
        process_group: the ranks `zero=True` shards over.
        model: for a program with per-step inputs over a layer's dimensions (K-FAC's
            `input a: [batch, cols]` and `input s: [batch, rows]`), the module whose
            `nn.Linear` layers record them: for each layer whose weight this optimizer
            steps, an input over `[batch, cols]` is the layer's input activations and one over
            `[batch, rows]` the gradient of the loss at its output, both flattened to
            `[batch, features]`. They are recorded only in the forward and backward passes
            before a step that reads them (K-FAC's every `tcov` steps); the last pass wins.
        **hypers: hyperparameters by their `.gd` names (`lr`, `muon.lr`, ...), overriding the
            program's defaults; an unknown name or a value out of range raises
            `gdc.HyperparameterError`.
    """

    def __init__(
        self,
        program,
        params,
        *,
        roles=None,
        base_shapes=None,
        nonfinite="propagate",
        threads=None,
        zero=False,
        process_group=None,
        model=None,
        **hypers,
    ):
        self.program = _as_program(program)
        self._input_decls = list(self.program.inputs)
        self._infos = {h.name: h for h in self.program.hypers}
        if nonfinite not in _POLICIES:
            raise GdcError(f"unknown non-finite policy {nonfinite!r}: one of {', '.join(map(repr, _POLICIES))}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise GdcError(f"threads must be a positive integer or None, got {threads!r}")
        self._nonfinite = nonfinite
        self._threads = threads
        self._roles = roles
        self._base_shapes = base_shapes
        self._bindings = {}
        self._fast = {}
        self._skipped = 0
        # The device mesh the state is sharded over: FSDP2's (DTensor parameters) or, with
        # zero=True, the process group's; None for an unsharded optimizer.
        if process_group is not None and not zero:
            raise GdcError("process_group is the group zero=True shards over; pass zero=True with it")
        self._zero = bool(zero)
        self._mesh = _distributed.replicated_mesh(process_group) if self._zero else None
        defaults = {}
        for h in self.program.hypers:
            defaults[h.name] = _typed(h, h.default)
        for name, value in hypers.items():
            defaults[name] = self._checked(name, value)
        super().__init__(params, defaults)
        self.state = _StateView(self)
        # Per-step inputs: what the hooks recorded for the next step, by parameter name and
        # input name; the parameters whose inputs the next step reads (None: not known yet,
        # before the first step binds the parameters: record every layer).
        self._recorded = {}
        self._collect = None
        self._hooks = []
        if model is not None:
            self._register_input_hooks(model)

    # ----- construction ---------------------------------------------------------------

    def _checked(self, name, value):
        """`value` for hyperparameter `name` as the group keeps it (typed), or raises."""
        info = self._infos.get(name)
        if info is None:
            known = ", ".join(self._infos) or "none"
            raise HyperparameterError(f"unknown hyperparameter `{name}`; optimizer `{self.program.name}` has: {known}")
        _check_value(self.program, info, name, value)
        return _typed(info, value)

    def add_param_group(self, param_group):
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        for key in list(param_group):
            if key not in _GROUP_KEYS:
                param_group[key] = self._checked(key, param_group[key])
        # A missing key (a torch LR scheduler's `lr` on a policy, whose learning rates are
        # `muon.lr`, `adamw.lr`, ...) says what the group has.
        param_group = _Group(param_group, self.program)
        super().add_param_group(param_group)
        group = param_group
        seen = {}
        for i, p in enumerate(group["params"]):
            if id(p) in seen:
                name = self._name_of(len(self.param_groups) - 1, i)
                self.param_groups.pop()
                raise TensorError(f"parameter `{name}` is given twice; give each tensor once")
            seen[id(p)] = i
        gi = len(self.param_groups) - 1
        specs = []
        for i, p in enumerate(group["params"]):
            name = self._name_of(gi, i)
            if p.dtype not in _DTYPES:
                self.param_groups.pop()
                raise TensorError(f"parameter `{name}` is {p.dtype}; gdc steps torch.float32 and torch.bfloat16 parameters")
            if p.numel() > 0:
                specs.append(self._spec_of(name, p))
        # Whether the program can step every parameter (an update for its rank, a route for
        # its role) is known now, not at the first step.
        try:
            self.program.check_params(specs)
            named = [(self._name_of(g, i), p) for g, grp in enumerate(self.param_groups) for i, p in enumerate(grp["params"])]
            mesh = _distributed.mesh_of(named)
            if self._zero and mesh is not None:
                raise TensorError(
                    "zero=True shards the state of a replicated model; these parameters are FSDP2 DTensors, whose "
                    "state is sharded already: drop zero=True"
                )
            if not self._zero:
                self._mesh = mesh
        except GdcError:
            self.param_groups.pop()
            raise

    def _name_of(self, group_index, i):
        group = self.param_groups[group_index]
        names = group.get("param_names")
        if names is not None:
            return names[i]
        return f"{group_index}.{i}"

    def _spec_of(self, name, p):
        """(name, shape, role, base shape): how the runtime binds parameter `p`."""
        return (name, list(p.shape), self._role_of(name, p), self._base_shape_of(name, p))

    def _role_of(self, name, p):
        roles = self._roles
        if roles is None:
            return "other"
        role = roles(name, p) if callable(roles) else roles.get(name, "other")
        return "other" if role is None else str(role)

    def _base_shape_of(self, name, p):
        shapes = self._base_shapes
        if shapes is None:
            return None
        shape = shapes(name, p) if callable(shapes) else shapes.get(name)
        return None if shape is None else [int(d) for d in shape]

    # ----- stepping -------------------------------------------------------------------

    @property
    def skipped_steps(self):
        """Steps skipped for a NaN or infinity in a gradient (`nonfinite="skip_step"`)."""
        own = [b.stepper.skipped_steps for b in self._bindings.values() if isinstance(b, _Binding)]
        return self._skipped + max(own, default=0)

    def global_value(self, name, group=0):
        """The current value of the program's global `name` for param group `group`: one
        scalar for the group's parameters, such as Prodigy's step size estimate `d`, to log as
        training runs (prodigyopt keeps it in `param_groups[i]["d"]`). None before the group
        has stepped. Raises GdcError if the program has no global of that name."""
        steppers = [s for b in self._bindings.values() if b.group_index == group for s in b.steppers()]
        if not steppers:
            return None
        value = steppers[0].global_value(name)
        if value is None:
            raise GdcError(f"program `{self.program.name}` has no global named `{name}`")
        return value

    @property
    def communication(self):
        """What this rank has contributed to collectives over all steps with sharded state
        (FSDP2 or zero=True), per collective: {"all_reduce" | "gather" | "scatter" |
        "broadcast": (calls, bytes)} (the non-finite agreement and state dicts
        aside); empty for an unsharded optimizer."""
        out = {}
        for b in self._bindings.values():
            for kind, (calls, nbytes) in getattr(b, "sent", {}).items():
                c, n = out.get(kind, (0, 0))
                out[kind] = (c + calls, n + nbytes)
        return out

    @property
    def matrix_flops(self):
        """Floating-point operations of the matrix library calls (products, decompositions)
        this rank has run over all steps."""
        total = 0
        for b in self._bindings.values():
            total += sum(s.matrix_flops for s in b.steppers())
        return total

    @property
    def state_bytes(self):
        """Bytes of optimizer state this rank holds (allocated when the parameters are bound,
        at the first step or state_dict)."""
        total = 0
        for b in self._bindings.values():
            for s in b.steppers():
                for _, _, shape in s.state_layout():
                    n = 4
                    for d in shape:
                        n *= d
                    total += n
        return total

    def _step(self, closure=None, inputs=None):
        """Steps every parameter that has a gradient, in place, as one fused pass per kernel
        over each group's parameters. Everything is checked first: on an error nothing has
        been stepped.

        `inputs`: the per-step inputs a program declares (`input h` in a `.gd` file), as
        {parameter (tensor or name): {input name: float32 CPU tensor}}; with those the
        `model=` hooks recorded, they are handed over with this step and not kept."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if inputs is not None and not self._input_decls:
            raise TensorError("this program declares no `input`; step() takes inputs only for one that does")
        if self._mesh is not None:
            if self._input_decls:
                raise GdcError(
                    "per-step inputs (K-FAC, Sophia-G) are not yet supported with sharded state (FSDP2, zero=True)"
                )
            # Under no_grad DTensor.to_local() is the local tensor itself; with autograd on it
            # is an autograd function call (~15 µs a tensor, 4 ms a step on 149 parameters).
            with torch.no_grad():
                self._step_sharded()
            return loss
        work, keep = self._prepare()
        if not work:
            return loss
        given = self._step_inputs(inputs, work, keep) if self._input_decls else None
        several = len(work) > 1
        if several and self._nonfinite != "propagate":
            # One binding checks its gradients itself; across several, all are checked
            # before any steps, so a step is skipped or refused whole.
            bad = self._first_non_finite(work)
            if bad is not None:
                self._clear_prepared(work)
                if self._nonfinite == "skip_step":
                    self._skipped += 1
                    return loss
                raise NonFiniteGradientError(
                    f"the gradient of `{bad}` holds non-finite elements (NaN or infinity); nothing was changed. "
                    "Look for the cause upstream, or pass nonfinite=\"skip_step\""
                )
        for binding, params, grads, hypers in work:
            for name, value in hypers:
                binding.stepper.set_hyper(name, value)
                binding.hypers[name] = value
            if several and self._nonfinite != "propagate":
                binding.stepper.set_nonfinite("propagate")
            try:
                if params is None:
                    binding.stepper.step_prepared()
                elif given is not None:
                    binding.stepper.step_inputs(params, grads, given.get(id(binding), []))
                elif binding.dtype == torch.bfloat16:
                    binding.stepper.step_bf16(params, grads)
                else:
                    binding.stepper.step(params, grads)
            finally:
                if several and self._nonfinite != "propagate":
                    binding.stepper.set_nonfinite(self._nonfinite)
        del keep
        if self._input_decls:
            self._recorded = {}
            self._collect = {p for b in self._bindings.values() for p, _ in b.stepper.inputs_next_step()}
        return loss

    # ----- per-step inputs ------------------------------------------------------------

    def _register_input_hooks(self, model):
        """Forward hooks on `model`'s nn.Linear layers whose weights this optimizer steps, for
        the inputs over a layer's `cols` (its input activations) and `rows` (the gradient at
        its output)."""
        if not isinstance(model, torch.nn.Module):
            raise GdcError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        own = lambda d: d not in ("rows", "cols")  # noqa: E731
        acts = [n for n, dims, _ in self._input_decls if dims and len(dims) == 2 and own(dims[0]) and dims[1] == "cols"]
        outs = [n for n, dims, _ in self._input_decls if dims and len(dims) == 2 and own(dims[0]) and dims[1] == "rows"]
        if not acts and not outs:
            raise GdcError(
                "model= records inputs shaped [batch, cols] (a layer's activations) or [batch, rows] (the gradient at "
                "its output); this program declares none: hand its inputs to step(inputs=...)"
            )
        names = {id(p): self._name_of(gi, i) for gi, g in enumerate(self.param_groups) for i, p in enumerate(g["params"])}
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and id(module.weight) in names:
                hook = functools.partial(self._record_linear, names[id(module.weight)], acts, outs)
                self._hooks.append(module.register_forward_hook(hook))
        if not self._hooks:
            raise GdcError("model= has no nn.Linear layer whose weight this optimizer steps")

    def _record_linear(self, name, acts, outs, module, args, output):
        if self._collect is not None and name not in self._collect:
            return
        if not torch.is_grad_enabled():
            return
        recorded = self._recorded.setdefault(name, {})
        if acts:
            a = args[0].detach().reshape(-1, module.in_features).float().contiguous()
            for n in acts:
                recorded[n] = a
        if outs and output.requires_grad:

            def on_grad(g):
                s = g.detach().reshape(-1, module.out_features).float().contiguous()
                for n in outs:
                    recorded[n] = s

            output.register_hook(on_grad)

    def remove_hooks(self):
        """Removes the `model=` hooks: nothing is recorded from then on."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _step_inputs(self, inputs, work, keep):
        """This step's inputs, per binding (by id) as the stepper takes them: (parameter name,
        input name, shape, (address, elements)), each tensor checked; recorded tensors and
        those given here (which win)."""
        by_name = {}
        for name, named in self._recorded.items():
            by_name.setdefault(name, {}).update(named)
        if inputs is not None:
            if not isinstance(inputs, Mapping):
                raise TensorError("inputs must be a dict {parameter or name: {input name: tensor}}")
            names = {id(p): self._name_of(gi, i) for gi, g in enumerate(self.param_groups) for i, p in enumerate(g["params"])}
            for key, named in inputs.items():
                name = names.get(id(key)) if isinstance(key, torch.Tensor) else key
                if name is None:
                    raise TensorError("inputs names a tensor that is not a parameter of this optimizer")
                if not isinstance(named, Mapping):
                    raise TensorError(f"inputs of `{name}` must be a dict {{input name: tensor}}")
                by_name.setdefault(str(name), {}).update(named)
        owner = {}
        for binding, _, _, _ in work:
            for name in binding.names:
                owner[name] = binding
        out = {}
        for name, named in by_name.items():
            binding = owner.get(name)
            if binding is None:
                raise TensorError(f"inputs for `{name}`, which is not a parameter stepped by this step (no gradient?)")
            if binding.dtype != torch.float32:
                raise TensorError(f"parameter `{name}` is {binding.dtype}; per-step inputs go with float32 parameters")
            for iname, t in named.items():
                if not isinstance(t, torch.Tensor):
                    raise TensorError(f"input `{iname}` of `{name}` must be a torch tensor, not {type(t).__name__}")
                if t.dtype != torch.float32:
                    raise TensorError(f"input `{iname}` of `{name}` is {t.dtype}; inputs are torch.float32")
                if not t.is_cpu:
                    raise DeviceError(f"input `{iname}` of `{name}` is on {t.device}: this gdc.torch steps CPU tensors only")
                if t.layout != torch.strided or not t.is_contiguous():
                    raise TensorError(f"input `{iname}` of `{name}` is not a contiguous dense tensor; pass t.contiguous()")
                keep.append(t)
                out.setdefault(id(binding), []).append((name, str(iname), list(t.shape), (t.data_ptr(), t.numel())))
        return out

    # torch wraps `step` in a profiler range and its hooks (`Optimizer.profile_hook_step`),
    # which costs ~20 µs a step even when nothing listens; gdc's `step` takes that path only
    # when a hook is registered or a profiler runs, and is otherwise the bare step.
    _step_hooked = torch.optim.Optimizer.profile_hook_step(_step)

    def step(self, closure=None, *, inputs=None):
        if inputs is not None or self._input_decls:
            if self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _global_pre_hooks or _global_post_hooks:
                return self._step_hooked(closure, inputs=inputs)
            return self._step(closure, inputs=inputs)
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_pre_hooks
            or _global_post_hooks
            or torch.autograd._profiler_enabled()
        ):
            return self._step_hooked(closure)
        return self._step(closure)

    step.__doc__ = _step.__doc__
    # Tells torch.optim.Optimizer not to wrap it again.
    step.hooked = True

    def _step_sharded(self):
        """The step with sharded state, FSDP2 or zero=True (see gdc/_distributed.py): every
        rank checks its tensors, the ranks agree on the non-finite policy, then the
        parameters stepped by shards step this rank's and the others step whole on their
        owners."""
        work = []
        new = {}
        for gi, group in enumerate(self.param_groups):
            indices = [i for i, p in enumerate(group["params"]) if p.grad is not None and p.numel() > 0]
            if not indices:
                continue
            key = (gi, torch.float32)
            binding = self._bindings.get(key)
            if binding is None:
                binding = new[key] = self._sharded_binding(gi, indices)
            elif binding.indices != indices:
                self._refuse_changed_set(gi, group, binding, indices)
            binding.check(self)
            work.append((binding, self._changed_hypers(group, binding)))
        self._bindings.update(new)
        if not work:
            return
        if self._nonfinite != "propagate":
            count, bad = _distributed.agree_non_finite([b for b, _ in work], self._mesh.get_group())
            if count:
                if self._nonfinite == "skip_step":
                    self._skipped += 1
                    return
                raise NonFiniteGradientError(
                    f"the gradients hold {count} non-finite element(s) (NaN or infinity) over all ranks, the first in "
                    f"`{bad}`; no rank changed anything. Look for the cause upstream, or pass nonfinite=\"skip_step\""
                )
        for binding, hypers in work:
            binding.step(hypers)

    def _sharded_binding(self, gi, indices):
        kind = _distributed.ReplicatedBinding if self._zero else _distributed.ShardedBinding
        return kind(self, gi, indices, self._mesh)

    def _packed_groups(self):
        """({id(param): index}, param groups as a state dict holds them: the parameters by
        index in group order, as torch numbers them)."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        return index, groups

    def _wrap_state(self, state, groups, bindings, sharded):
        """A state dict in torch's structure plus the `gdc` entry the runtime resumes from."""
        info = {
            "format": _STATE_DICT_FORMAT,
            "optimizer": self.program.name,
            "program_hash": self.program.hash,
            "nonfinite": self._nonfinite,
            "skipped_steps": self._skipped,
            "bindings": bindings,
        }
        if sharded:
            info["sharded"] = True
        return {"state": state, "param_groups": groups, "gdc": info}

    def _sharded_bindings(self):
        """Every group's sharded binding, made for all its non-empty parameters if it has
        not stepped yet (a fresh optimizer's state dict is the template
        torch.distributed.checkpoint loads into)."""
        out = []
        for gi, group in enumerate(self.param_groups):
            key = (gi, torch.float32)
            if key not in self._bindings:
                indices = [i for i, p in enumerate(group["params"]) if p.numel() > 0]
                if not indices:
                    continue
                self._bindings[key] = self._sharded_binding(gi, indices)
            out.append(self._bindings[key])
        return out

    def _sharded_state_dict(self):
        """The state dict under FSDP2 or zero=True: every state a DTensor placed as FSDP2
        places the parameter (Shard(0) on the mesh; a scalar Replicate), ready for torch.distributed.checkpoint,
        which reshards it to another world size on load. Collective: every rank calls it."""
        index, groups = self._packed_groups()
        state = {}
        bindings = []
        with torch.no_grad():
            for binding in self._sharded_bindings():
                step, skipped, globals_ = binding.counters()
                ids = [index[id(p)] for p in binding.params]
                for k, states in binding.state().items():
                    if states:
                        entry = {"step": torch.tensor(float(step))}
                        entry.update(states)
                        state[ids[k]] = entry
                bindings.append(
                    {
                        "group": binding.group_index,
                        "dtype": _DTYPES[binding.dtype],
                        "params": ids,
                        "step": step,
                        "skipped_steps": skipped,
                        "globals": globals_,
                    }
                )
        return self._wrap_state(state, groups, bindings, sharded=True)

    def _load_sharded(self, state_dict, info, new_groups):
        """Restores a sharded state dict (after torch.distributed.checkpoint.load into this
        optimizer's own `state_dict()`, at any world size) into fresh bindings."""
        index, _ = self._packed_groups()
        fresh = {}
        for gi, group in enumerate(self.param_groups):
            indices = [i for i, p in enumerate(group["params"]) if p.numel() > 0]
            if indices:
                fresh[(gi, torch.float32)] = self._sharded_binding(gi, indices)
        saved = {b["group"]: b for b in info["bindings"]}
        for (gi, _), binding in fresh.items():
            b = saved.get(gi)
            if b is None:
                raise CheckpointError(f"the state dict has no state for param group {gi}")
            ids = [index[id(p)] for p in binding.params]
            if list(b["params"]) != ids:
                raise CheckpointError(f"param group {gi} holds parameters {ids} here, {list(b['params'])} in the state dict")
            group = self.param_groups[gi]
            hypers = [
                (name, _runtime_value(info, new_groups[gi].get(name, group[name])))
                for name, info in self._infos.items()
            ]
            states = {k: {s: t for s, t in state_dict["state"].get(i, {}).items() if s != "step"} for k, i in enumerate(ids)}
            meta = dict(info, step=b["step"], skipped_steps=b["skipped_steps"], globals=b["globals"])
            try:
                binding.restore(meta, states, hypers)
            except CheckpointError as e:
                raise CheckpointError(f"param group {gi}: {e}") from None
            binding.hypers = dict(hypers)
        for group, values in zip(self.param_groups, new_groups):
            group.update(values)
        self._bindings = fresh
        self._skipped = int(info.get("skipped_steps", 0))

    def _refuse_sharded(self, what):
        if self._mesh is not None:
            raise GdcError(
                f"{what} of an optimizer with sharded state (FSDP2 or zero=True) is not supported: it is sharded over "
                "ranks; save it with torch.distributed.checkpoint.save({'optim': optimizer.state_dict(), ...}) and "
                "load it with torch.distributed.checkpoint.load into a fresh optimizer's state_dict(), then "
                "optimizer.load_state_dict(...)"
            )

    def _clear_prepared(self, work):
        for binding, params, _, _ in work:
            if params is None:
                binding.stepper.clear_prepared()

    def _prepare(self):
        """Checks every tensor and hyperparameter of this step and binds groups stepping for
        the first time; returns (binding, params, grads, hyperparameters to set) for each
        binding with gradients (params None: the binding kept its checked regions itself),
        and tensors to keep alive for the step. Raises before anything is stepped."""
        work = []
        try:
            return self._prepare_into(work)
        except BaseException:
            self._clear_prepared(work)
            raise

    def _prepare_into(self, work):
        new = {}
        keep = []  # gradients widened to float32 for bf16 parameters, alive for the step
        for gi, group in enumerate(self.param_groups):
            fast = self._fast.get(gi)
            if fast is not None:
                binding, mask, shapes = fast
                if binding.stepper.prepare_torch(group["params"], mask, shapes, torch.float32):
                    work.append((binding, None, None, self._changed_hypers(group, binding)))
                    continue
            by_dtype = {}
            for i, p in enumerate(group["params"]):
                g = p.grad
                if g is None or p.numel() == 0:
                    continue
                if p.dtype not in _DTYPES:
                    raise TensorError(
                        f"parameter `{self._name_of(gi, i)}` is {p.dtype}; gdc steps torch.float32 and torch.bfloat16 "
                        "parameters. Nothing was stepped."
                    )
                by_dtype.setdefault(p.dtype, []).append(i)
            for dtype, indices in by_dtype.items():
                key = (gi, dtype)
                binding = self._bindings.get(key)
                if binding is None:
                    binding = new[key] = _Binding(self, gi, dtype, indices)
                elif binding.indices != indices:
                    self._refuse_changed_set(gi, group, binding, indices)
                params, grads = self._regions(gi, group, binding, keep)
                work.append((binding, params, grads, self._changed_hypers(group, binding)))
        self._bindings.update(new)
        if new:
            self._refresh_fast()
        return work, keep

    def _changed_hypers(self, group, binding):
        """The group's hyperparameters that differ from what the binding has, checked."""
        changed = []
        last = binding.hypers
        for name, info in self._infos.items():
            value = _precision_bits(info, group[name])
            if value is None and name in last and math.isnan(last[name]):
                continue
            # Not `last.get(name)`: an unset optional hyperparameter is None in the group.
            if name not in last or last[name] != value:
                changed.append((name, _check_value(self.program, info, name, value)))
        return changed

    def _refresh_fast(self):
        """Which groups step as one float32 binding: those take the native fast path (not a
        program with per-step inputs, which steps through `step_inputs`)."""
        self._fast = {}
        if self._input_decls:
            return
        by_group = {}
        for (gi, dtype), binding in self._bindings.items():
            by_group.setdefault(gi, []).append(binding)
        for gi, bindings in by_group.items():
            if len(bindings) == 1 and bindings[0].dtype == torch.float32:
                b = bindings[0]
                n = len(self.param_groups[gi]["params"])
                mask = [False] * n
                for i in b.indices:
                    mask[i] = True
                self._fast[gi] = (b, mask, [torch.Size(s) for s in b.shapes])

    def _refuse_changed_set(self, gi, group, binding, indices):
        for i in binding.indices:
            p = group["params"][i]
            if p.grad is not None and p.dtype != binding.dtype:
                raise TensorError(
                    f"parameter `{self._name_of(gi, i)}` changed dtype to {p.dtype} after the first step (was "
                    f"{binding.dtype}); make a new optimizer for a model cast to another dtype. Nothing was stepped."
                )
        had = set(binding.indices)
        now = set(indices)
        missing = [f"`{self._name_of(gi, i)}`" for i in sorted(had - now)]
        extra = [f"`{self._name_of(gi, i)}`" for i in sorted(now - had)]
        what = []
        if missing:
            what.append(f"{', '.join(missing)} had a gradient at the group's first step but not at this one")
        if extra:
            what.append(f"{', '.join(extra)} had no gradient at the group's first step but has one now")
        raise TensorError(
            f"param group {gi}: {'; '.join(what)}. gdc steps a group's parameters together (one fused pass), so a "
            "parameter must have a gradient at every step of its group or at none: freeze parameters that never "
            "train (requires_grad_(False)) and put parameters that train only on some steps in a param group of "
            "their own. Nothing was stepped."
        )

    def _regions(self, gi, group, binding, keep):
        """(address, elements) of each parameter and gradient of a binding, checked."""
        params = []
        grads = []
        bf16 = binding.dtype == torch.bfloat16
        for i, p, shape in zip(binding.indices, binding.params, binding.shapes):
            if group["params"][i] is not p:
                raise TensorError(f"parameter `{self._name_of(gi, i)}` was replaced in its param group after the first step")
            g = p.grad
            if not p.is_cpu or not g.is_cpu:
                dev = p.device if not p.is_cpu else g.device
                if p.device != g.device:
                    raise TensorError(f"parameter `{self._name_of(gi, i)}` is on {p.device} but its gradient on {g.device}")
                raise DeviceError(
                    f"parameter `{self._name_of(gi, i)}` is on {dev}: this gdc.torch steps CPU tensors only for now "
                    "(CUDA tensors are not yet supported); move the model to the CPU or use a torch optimizer on the GPU"
                )
            if p.dtype != binding.dtype:
                raise TensorError(f"parameter `{self._name_of(gi, i)}` changed dtype to {p.dtype} after the first step (was {binding.dtype})")
            if p.shape != shape:
                raise TensorError(
                    f"parameter `{self._name_of(gi, i)}` has shape {tuple(p.shape)}, but the optimizer was bound to it at "
                    f"shape {shape}; make a new optimizer for a resized model"
                )
            if g.shape != shape:
                raise TensorError(f"the gradient of `{self._name_of(gi, i)}` has shape {tuple(g.shape)}, the parameter {shape}")
            if g.layout != torch.strided:
                raise TensorError(f"the gradient of `{self._name_of(gi, i)}` is {g.layout}; gdc steps dense gradients")
            if not p.is_contiguous():
                raise TensorError(f"parameter `{self._name_of(gi, i)}` is not contiguous; gdc steps contiguous tensors in place")
            if bf16:
                if g.dtype == torch.bfloat16:
                    g = g.float()
                    keep.append(g)
                elif g.dtype != torch.float32:
                    raise TensorError(f"the gradient of `{self._name_of(gi, i)}` is {g.dtype}; a bfloat16 parameter takes a bfloat16 or float32 gradient")
            elif g.dtype != torch.float32:
                raise TensorError(f"the gradient of `{self._name_of(gi, i)}` is {g.dtype}, its parameter float32")
            if not g.is_contiguous():
                raise TensorError(f"the gradient of `{self._name_of(gi, i)}` is not contiguous; gdc reads contiguous gradients")
            n = p.numel()
            params.append((p.data_ptr(), n))
            grads.append((g.data_ptr(), n))
        return params, grads

    def _first_non_finite(self, work):
        for binding, _, _, _ in work:
            for name, p in zip(binding.names, binding.params):
                if not bool(torch.isfinite(p.grad).all()):
                    return name
        return None

    # ----- state ----------------------------------------------------------------------

    def _param_states(self):
        """Every parameter's state, as `optimizer.state` shows it."""
        self._refuse_sharded("optimizer.state")
        out = {}
        for binding in self._bindings.values():
            meta, tensors = binding.stepper.snapshot()
            for p, states in zip(binding.params, _per_param(binding, tensors)):
                if states:
                    entry = {"step": torch.tensor(float(meta["step"]))}
                    entry.update(states)
                    out[p] = entry
        return out

    def state_dict(self):
        """The optimizer's state in torch's structure — `state` (per parameter index, its
        state tensors and `step`) and `param_groups` (hyperparameters, parameter indices) —
        plus a `gdc` entry with what the runtime needs to resume exactly (the program, each
        binding's step and skipped-step counts and global scalars). Tensors are copies."""
        if self._mesh is not None:
            return self._sharded_state_dict()
        index, groups = self._packed_groups()
        state = {}
        bindings = []
        for binding in self._bindings.values():
            meta, tensors = binding.stepper.snapshot()
            ids = [index[id(p)] for p in binding.params]
            for k, states in zip(ids, _per_param(binding, tensors)):
                if states:
                    entry = {"step": torch.tensor(float(meta["step"]))}
                    entry.update(states)
                    state[k] = entry
            bindings.append(
                {
                    "group": binding.group_index,
                    "dtype": _DTYPES[binding.dtype],
                    "params": ids,
                    "step": meta["step"],
                    "skipped_steps": meta["skipped_steps"],
                    "globals": dict(meta["globals"]),
                }
            )
        return self._wrap_state(state, groups, bindings, sharded=False)

    def load_state_dict(self, state_dict):
        """Restores `state_dict()` into an optimizer over the same parameters (by position, as
        torch does; shapes and dtypes must agree). Every tensor and value is checked before
        anything changes: on an error the optimizer is exactly as it was."""
        if not isinstance(state_dict, dict) or "gdc" not in state_dict:
            raise CheckpointError(
                "not a gdc state dict (it has no `gdc` entry): load a dict made by gdc.torch.Optimizer.state_dict(); "
                "a torch optimizer's state does not carry what the gdc program needs"
            )
        info = state_dict["gdc"]
        if info.get("format") != _STATE_DICT_FORMAT:
            raise CheckpointError(f"state dict format {info.get('format')!r}, this gdc reads {_STATE_DICT_FORMAT!r}")
        if bool(info.get("sharded")) != (self._mesh is not None):
            raise CheckpointError(
                "the state dict was saved "
                + ("with sharded state (FSDP2 or zero=True)" if info.get("sharded") else "with unsharded state")
                + (", this optimizer's is not sharded" if self._mesh is None else ", this optimizer's is sharded")
                + ": save and load with the same kind of optimizer (torch.distributed.checkpoint reshards across world "
                "sizes)"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise CheckpointError(f"the state dict has {len(saved_groups)} param group(s), the optimizer {len(self.param_groups)}")
        params = []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise CheckpointError(
                    f"param group {gi} has {len(saved['params'])} parameter(s) in the state dict, {len(group['params'])} here"
                )
            params.extend(group["params"])
        position = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for k, p in zip(saved["params"], group["params"]):
                position[k] = p
        # Hyperparameters, checked before anything changes.
        new_groups = []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            values = {}
            for key, value in saved.items():
                if key in ("params", "param_names"):
                    continue
                if key in _GROUP_KEYS:
                    values[key] = value
                    continue
                try:
                    values[key] = self._checked(key, value)
                except HyperparameterError as e:
                    raise CheckpointError(f"param group {gi} of the state dict: {e}") from None
            new_groups.append(values)
        if self._mesh is not None:
            self._load_sharded(state_dict, info, new_groups)
            return
        # Fresh bindings, restored; swapped in only if all succeed.
        bindings = {}
        for b in info["bindings"]:
            gi = b["group"]
            dtype = {v: k for k, v in _DTYPES.items()}.get(b["dtype"])
            if dtype is None or not 0 <= gi < len(self.param_groups):
                raise CheckpointError(f"a binding of the state dict names group {gi} and dtype {b['dtype']!r}")
            group = self.param_groups[gi]
            ids_here = {id(p): i for i, p in enumerate(group["params"])}
            indices = []
            for k in b["params"]:
                p = position.get(k)
                if p is None or id(p) not in ids_here:
                    raise CheckpointError(f"the state dict's parameter {k} is not in param group {gi} here")
                if p.dtype != dtype:
                    raise CheckpointError(f"parameter `{self._name_of(gi, ids_here[id(p)])}` is {p.dtype} here, {b['dtype']} in the state dict")
                indices.append(ids_here[id(p)])
            binding = _Binding(self, gi, dtype, indices)
            hypers = [
                (name, _runtime_value(info, new_groups[gi].get(name, group[name])))
                for name, info in self._infos.items()
            ]
            tensors = []
            keep = []
            members = binding.members()
            for k, (param_index, p) in zip(b["params"], enumerate(binding.params)):
                saved_state = state_dict["state"].get(k, {})
                for sname, t in saved_state.items():
                    if sname == "step":
                        continue
                    if not isinstance(t, torch.Tensor):
                        raise CheckpointError(f"state `{sname}` of `{binding.names[param_index]}` is not a tensor")
                    t = t.detach().to("cpu", torch.float32).contiguous()
                    keep.append(t)
                    tensors.extend(_state.unstack(members, param_index, binding.names[param_index], sname, t, p.shape))
            param_list = [(name, list(shape)) for name, shape in zip(binding.names, binding.shapes)]
            try:
                _state.restore(binding.stepper, info, b, param_list, hypers, tensors)
            except CheckpointError as e:
                raise CheckpointError(f"param group {gi}: {e}") from None
            binding.hypers = dict(hypers)
            bindings[(gi, dtype)] = binding
        for group, values in zip(self.param_groups, new_groups):
            group.update(values)
        self._bindings = bindings
        self._refresh_fast()
        self._skipped = int(info.get("skipped_steps", 0))

    def save_checkpoint(self, path):
        """Saves the runtime's own checkpoint (safetensors, atomic, checksummed; see
        docs/checkpoints.md) of an optimizer whose parameters step as one binding (one param
        group and dtype); for several, use `torch.save(optimizer.state_dict(), path)`."""
        self._refuse_sharded("save_checkpoint")
        self._single("save_checkpoint").stepper.save_checkpoint(os.fspath(path))

    def load_checkpoint(self, path):
        """Loads a checkpoint `save_checkpoint` wrote, into an optimizer that has stepped
        once (so its parameters are bound) or whose parameters all have gradients."""
        self._refuse_sharded("load_checkpoint")
        if len(self.param_groups) == 1 and not self._bindings:
            group = self.param_groups[0]
            indices = [i for i, p in enumerate(group["params"]) if p.numel() > 0]
            binding = _Binding(self, 0, _only_dtype(self), indices)
            binding.stepper.load_checkpoint(os.fspath(path))
            self._bindings[(0, binding.dtype)] = binding
            self._refresh_fast()
        else:
            self._single("load_checkpoint").stepper.load_checkpoint(os.fspath(path))

    def _single(self, what):
        if len(self.param_groups) != 1 or len(self._bindings) > 1:
            raise GdcError(
                f"{what} works on an optimizer of one param group and dtype; this one has {len(self.param_groups)} "
                "group(s): use torch.save(optimizer.state_dict(), path) and load_state_dict"
            )
        if not self._bindings:
            raise GdcError(f"{what}: the optimizer has not stepped yet, so it holds no state")
        return next(iter(self._bindings.values()))

    def __repr__(self):
        return f"gdc.torch.Optimizer({self.program.name}, {len(self.param_groups)} group(s))"


class _Group(dict):
    """A param group: a dict whose missing keys raise a KeyError that names the group's
    hyperparameters (torch's LR schedulers read `group["lr"]`)."""

    def __init__(self, group, program):
        super().__init__(group)
        self._program = program

    def __missing__(self, key):
        names = ", ".join(h.name for h in self._program.hypers)
        hint = ""
        if key == "lr":
            hint = (
                "; a torch LR scheduler drives a group's `lr`, and this program's learning rates have other names: "
                "set them each step yourself (group['muon.lr'] = ...), or use a program with an `lr`"
            )
        raise KeyError(f"{key!r}: optimizer `{self._program.name}` has no hyperparameter `{key}` (it has: {names}){hint}")

    def __deepcopy__(self, memo):
        import copy

        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return (dict, (dict(self),))


def _only_dtype(opt):
    dtypes = {p.dtype for g in opt.param_groups for p in g["params"]}
    if len(dtypes) != 1:
        raise GdcError("load_checkpoint needs parameters of one dtype; use load_state_dict")
    return dtypes.pop()


def _typed(info, value):
    if info.optional and (value is None or (isinstance(value, float) and math.isnan(value))):
        return None
    if info.type == "precision":
        bits = _precision_bits(info, value)
        return next((n for n, b in _PRECISIONS.items() if b == bits), value)
    if info.type == "bool":
        return bool(value)
    if info.type == "int":
        return int(value)
    return float(value)


def _per_param(binding, tensors):
    """Per parameter of the binding, its state as {name: tensor} (see gdc/_state.py)."""
    return _state.stack(binding.members(), binding.shapes, tensors)


def infer_roles(model):
    """The usual roles of a model's parameters, by module type, keyed by the names
    `model.named_parameters()` gives: `embedding` (nn.Embedding), `norm` (normalisation
    layers' gains and biases), `bias` (other one-dimensional parameters), `output` (the
    output head: a linear layer named `lm_head`, `head`, `output` or `classifier`, else the
    last linear layer registered), `hidden` (every other parameter of two or more
    dimensions)."""
    nn = torch.nn
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    if hasattr(nn, "RMSNorm"):
        norms = norms + (nn.RMSNorm,)
    roles = {}
    owner = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            owner[id(p)] = (mname, module, pname)
    linears = []
    for name, p in model.named_parameters():
        mname, module, pname = owner[id(p)]
        if isinstance(module, nn.Embedding):
            roles[name] = "embedding"
        elif isinstance(module, norms):
            roles[name] = "norm"
        elif p.ndim < 2:
            roles[name] = "bias"
        else:
            roles[name] = "hidden"
            if isinstance(module, nn.Linear) and pname == "weight":
                linears.append((mname, name))
    heads = [name for mname, name in linears if mname.split(".")[-1] in ("lm_head", "head", "output", "classifier")]
    if heads:
        for name in heads:
            roles[name] = "output"
    elif linears:
        roles[linears[-1][1]] = "output"
    return roles


__all__ = ["Optimizer", "infer_roles"]


def sophia_hessian_inputs(logits, params, *, max_norm=1.0, generator=None):
    """Sophia-G's input `h` for `params`, as train_sophiag.py makes it: labels sampled from the
    model's own predictive distribution (`logits`, [..., classes], still attached to the
    graph), the mean cross-entropy of those labels, its gradient with respect to each
    parameter, clipped together to global norm `max_norm` (None: not clipped), as
    train_sophiag.py clips with `grad_clip = 1.0`. Returns {parameter: {"h": tensor}} for
    `step(inputs=...)`; parameters the loss does not reach are left out. train_sophiag.py
    refreshes after the optimizer step of every iteration with `iter % k == k - 1`: hand the
    result to the next step. `.grad` is left alone."""
    params = list(params)
    params = [p for _, p in params] if _named(params) else params
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        probs = torch.softmax(flat.detach().float(), dim=-1)
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    loss = torch.nn.functional.cross_entropy(flat, labels)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    pairs = [(p, g.detach().float()) for p, g in zip(params, grads) if g is not None]
    if max_norm is not None and pairs:
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for _, g in pairs]))
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        pairs = [(p, g * scale) for p, g in pairs]
    return {p: {"h": g.contiguous()} for p, g in pairs}


def _named(params):
    if isinstance(params, (list, tuple)):
        return bool(params) and isinstance(params[0], tuple)
    return False
