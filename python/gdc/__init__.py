"""gdc, the Guided Descent Compiler, from Python: compile a `.gd` optimizer to fused kernels
and step them in place on PyTorch tensors (`gdc.torch.Optimizer`).

    program = gdc.compile("examples/optimizers/adamw.gd")      # or gdc.load("adamw.gdo")
    print(program.emit("plan"))                                 # ast, ir, ir-opt, plan, clif, mlir, ptx
    opt = gdc.torch.Optimizer(program, model.named_parameters(), lr=3e-4)
"""

import os

from gdc._native import Program, __version__
from gdc.errors import (
    ArtifactError,
    CheckpointError,
    CompileError,
    DeviceError,
    GdcError,
    HyperparameterError,
    NonFiniteGradientError,
    TensorError,
)
from gdc import _native


def _is_path(x):
    """Whether `x` names a file rather than holding `.gd` source."""
    if isinstance(x, os.PathLike):
        return True
    return isinstance(x, str) and "\n" not in x and "{" not in x


def compile(path_or_source, target="cpu", arch=None):
    """Compiles a `.gd` file (a path) or `.gd` source (a string holding the program) for
    `target` "cpu" or "cuda" (PTX for `arch`, default sm_80, which later GPUs also run).
    A path ending in `.gdo` is loaded as an artifact. Raises CompileError with exactly what
    `gdc check` prints when the program has errors."""
    if not isinstance(path_or_source, (str, os.PathLike)):
        raise TypeError(f"gdc.compile takes a path or .gd source, not {type(path_or_source).__name__}")
    if _is_path(path_or_source):
        path = os.fspath(path_or_source)
        if path.endswith(".gdo"):
            return load(path)
        return _native.compile_file(path, target, arch)
    return _native.compile_source(path_or_source, "<source>", target, arch)


def load(path):
    """Loads a `.gdo` artifact built by `gdc build` (or `Program.save`); raises ArtifactError,
    with the CLI's message, for one that is truncated, corrupt, stale or of another format."""
    return _native.load(os.fspath(path))


def __getattr__(name):
    # `gdc.torch` imports torch, so it loads only when asked for.
    if name == "torch":
        import importlib

        return importlib.import_module("gdc.torch")
    raise AttributeError(f"module 'gdc' has no attribute {name!r}")


__all__ = [
    "Program",
    "compile",
    "load",
    "GdcError",
    "CompileError",
    "ArtifactError",
    "CheckpointError",
    "HyperparameterError",
    "TensorError",
    "NonFiniteGradientError",
    "DeviceError",
    "__version__",
]
