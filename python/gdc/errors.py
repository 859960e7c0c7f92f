"""The exceptions gdc raises: one base class, and one class per kind of misuse, each also a
subclass of the built-in exception Python code would expect (a bad value is a ValueError)."""


class GdcError(Exception):
    """Anything gdc refuses; the message says what was wrong and what to do."""


class CompileError(GdcError):
    """A `.gd` program with errors: the message is exactly what `gdc check` prints (every
    error with file:line:col, a caret and a hint, then the count)."""


class ArtifactError(GdcError):
    """A `.gdo` artifact that cannot be read or trusted (truncated, corrupt, stale, of
    another format), with the CLI's message."""


class CheckpointError(GdcError):
    """A checkpoint or state dict that does not fit this optimizer and its parameters;
    nothing was changed."""


class HyperparameterError(GdcError, ValueError):
    """An unknown hyperparameter, or a value of the wrong type or outside its declared range."""


class TensorError(GdcError, ValueError):
    """A tensor gdc cannot step: wrong dtype, layout, device or shape, or given twice. The
    message names the parameter; nothing was stepped."""


class NonFiniteGradientError(GdcError, FloatingPointError):
    """A gradient held NaN or infinity under `nonfinite="error"`; nothing was changed."""


class DeviceError(GdcError, RuntimeError):
    """No usable GPU, or a program or package without the GPU code a device needs."""


__all__ = [
    "GdcError",
    "CompileError",
    "ArtifactError",
    "CheckpointError",
    "HyperparameterError",
    "TensorError",
    "NonFiniteGradientError",
    "DeviceError",
]
