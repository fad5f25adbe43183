"""The one evaluation counter: :class:`CountedFunc` wraps ``func(t, y)``, counts its calls and
accepts the time as a Python float or a tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from .errors import InvalidInput


def is_tracing() -> bool:
    """True while ``torch.compile``, ``torch.jit.trace`` or ``torch.export`` records a graph, or
    a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ...) runs: code that reads tensor
    values (checks, ``float()``) must stand aside then."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or bool(active_transforms()))


def active_transforms() -> frozenset[str]:
    """Names of the ``torch.func`` transforms the caller runs under (``"vmap"``, ``"grad"``,
    ``"jvp"``, ...; ``jacrev`` runs its function under ``"grad"``), empty outside them (and while
    ``torch.compile`` traces: its graph cannot read the interpreter stack)."""
    if torch.compiler.is_compiling():
        return frozenset()
    return frozenset(interpreter.key().name.lower() for interpreter in retrieve_all_functorch_interpreters())


def check_func_output(out: Any, y: Tensor) -> Tensor:
    """``func(t, y)``'s output as dy/dt for ``y``: a tensor of y's shape and device, cast to y's
    dtype when it is a floating dtype of the same kind (e.g. float64 for a float32 state, as when a
    0-dim state meets a float64 ``t``; torchdiffeq integrates such funcs the same way).

    Raises:
        InvalidInput: the output is not a tensor, its shape or device differs from y's, or its
            dtype cannot be cast meaningfully (integer, bool, complex for a real state).
    """
    if not isinstance(out, Tensor):
        raise InvalidInput("func output", type(out).__name__, "a Tensor with the shape of y0")
    for what in ("shape", "device"):
        if getattr(out, what) != getattr(y, what):
            raise InvalidInput(f"func output {what}", str(getattr(out, what)),
                               f"{getattr(y, what)} (the {what} of y0)",
                               hint="func(t, y) must return dy/dt with the same shape and device as y")
    if out.dtype == y.dtype:
        return out
    if not (out.is_floating_point() and y.is_floating_point()):
        raise InvalidInput("func output dtype", str(out.dtype), f"{y.dtype} (the dtype of y0) or another "
                           "floating-point dtype", hint="func(t, y) must return a real floating-point dy/dt")
    return out.to(y.dtype)


class CountedFunc(nn.Module):
    """``func(t, y)`` with its evaluations counted in ``nfe``.

    ``t`` may be a Python float (odegrad's solvers pass floats) or a tensor (torchdiffeq passes
    tensors); a float becomes a 0-dim tensor of ``time_dtype`` (default: y's dtype) on y's device.
    Every output with a plain-tensor ``y`` is checked against y's shape and device and cast to its
    dtype (:func:`check_func_output`). Under
    ``torch.compile`` nothing is counted, so no Python int changes inside a compiled region (a
    change would force a recompilation per call). An ``nn.Module`` func stays a submodule, so
    ``parameters()`` (and torchdiffeq's adjoint) still find its parameters.

    Shapes: ``forward(t: float | Tensor[], y: Tensor[*shape]) -> Tensor[*shape]``.

    Args:
        func: the right-hand side ``func(t, y)``.
        time_dtype: dtype of the time tensor built from a float ``t`` (None: y's dtype).

    Raises:
        InvalidInput: ``func`` is not callable.
    """

    def __init__(self, func: Callable[[Tensor, Any], Any], time_dtype: torch.dtype | None = None):
        super().__init__()
        if not callable(func):
            raise InvalidInput("func", type(func).__name__, "a callable func(t, y)")
        self.func = func
        self.time_dtype = time_dtype
        self.nfe = 0

    def time(self, value: float | Tensor, like: Any) -> Tensor:
        """A float ``value`` as the 0-dim time tensor func receives (``like``: the state, for its
        device); tensors (and Taylor-mode jets) pass through."""
        if not isinstance(value, (int, float)):
            return value
        # a fill, not torch.tensor: no host-to-device copy (which blocks the host on CUDA)
        return torch.full((), value, dtype=self.time_dtype or like.dtype, device=like.device)

    def forward(self, t: float | Tensor, y: Any) -> Any:
        """``func(t, y)``, counted (except under ``torch.compile``), checked against y and cast to
        its dtype.

        Raises:
            InvalidInput: func's output is not a tensor of y's shape and device with a floating
                dtype, or the first call failed because func does not accept y's shape.
        """
        if not torch.compiler.is_compiling():
            self.nfe += 1
        try:
            out = self.func(self.time(t, y), y)
        except RuntimeError as error:
            if self.nfe == 1 and isinstance(y, Tensor) and _is_shape_error(error):
                raise InvalidInput("func", f"a shape error on its first call, func(t, y) with y of shape "
                                   f"{tuple(y.shape)}: {error}", "a func that accepts the state's shape",
                                   hint=f"either func has a shape bug or the y0 shape {tuple(y.shape)} is "
                                        "not one func accepts") from error
            raise
        if isinstance(y, Tensor):
            return check_func_output(out, y)
        return out


def _is_shape_error(error: RuntimeError) -> bool:
    """torch's messages for operands whose sizes do not fit (matmul, broadcasting, views)."""
    message = str(error)
    return any(key in message for key in (
        "shapes cannot be multiplied", "must match the size", "The size of tensor", "size mismatch",
        "Expected size", "invalid for input of size", "need to be at least", "Dimension out of range"))


def counted(func: Callable, time_dtype: torch.dtype | None = None) -> CountedFunc:
    """``func`` itself if it is already a :class:`CountedFunc`, else ``func`` wrapped in one."""
    return func if isinstance(func, CountedFunc) else CountedFunc(func, time_dtype)
