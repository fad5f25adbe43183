"""Arithmetic on times, step sizes and error ratios that are Python floats (the eager driver) or
0-dim tensors (the traced driver), so that both drivers run the same step-control code.

The functions here pick Python's operators for floats (no tensor overhead on the eager hot path)
and torch's for tensors (no value read, so a traced solve compiles and exports as one graph).

Constants: the ONNX exporter turns a Python float in float64 tensor arithmetic into a float32
constant, which rounds a tableau coefficient or the controller's safety factor and changes the
step sequence. :func:`const` returns a float64 tensor made before the solve instead while
:func:`exact_constants` is active (``odegrad.export`` activates it); elsewhere it returns the
float itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

Scalar = float | Tensor
"""A time, step size or error ratio: a Python float, or a 0-dim float64 tensor."""

_TABLE: dict[float, Tensor] | None = None


def const(value: float) -> Scalar:
    """``value``, or its float64 tensor while :func:`exact_constants` is active."""
    if _TABLE is None:
        return value
    return _TABLE[value]


def exact(rows: Sequence[Sequence[float]]) -> Sequence[Sequence[Scalar]]:
    """A matrix of float constants (e.g. a tableau's dense-output weights) through :func:`const`:
    the rows themselves unless :func:`exact_constants` is active."""
    if _TABLE is None:
        return rows
    return [[_TABLE[value] for value in row] for row in rows]


@contextlib.contextmanager
def exact_constants(values: Iterable[float], device: torch.device | str | None = None) -> Iterator[None]:
    """While active, :func:`const` returns float64 tensors for ``values`` (made here, before
    any loop body: a while loop's body may not create tensors). A constant outside ``values``
    raises KeyError: the owner that asks for it must declare it (see ``constants()`` of the
    step solvers and controllers)."""
    global _TABLE
    table = {float(v): torch.tensor(float(v), dtype=torch.float64, device=device) for v in values}
    previous, _TABLE = _TABLE, table
    try:
        yield
    finally:
        _TABLE = previous


def tolerance(value: float | Tensor, like: Tensor) -> Tensor:
    """``rtol``/``atol`` for a traced solve of states like ``like``: a tensor in its dtype and
    device (the value a float tolerance has in that dtype's arithmetic); while
    :func:`exact_constants` is active, with at least 2 dimensions (onnxscript's optimizer takes a
    scalar constant within 1e-8 of zero for zero and drops ``atol + x``, odegrad's default atol
    being 1e-9; a broadcast shape keeps the add and its value)."""
    # always a tensor: torch.compile makes a float tolerance symbolic when it differs between
    # compiled models, and a while loop's body takes no symbolic float
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if _TABLE is None:
        return value
    rank = max(like.dim(), 2)
    return value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))


def where(condition: bool | Tensor, a: Any, b: Any) -> Any:
    """``a if condition else b``; elementwise ``torch.where`` for a tensor condition."""
    if isinstance(condition, Tensor):
        return torch.where(condition, a, b)
    return a if condition else b


def minimum(a: Scalar, b: Scalar) -> Scalar:
    """The smaller of ``a`` and ``b`` (no tensor is created: a loop body may not create one)."""
    if isinstance(a, Tensor):
        return torch.minimum(a, b) if isinstance(b, Tensor) else a.clamp(max=b)
    return b.clamp(max=a) if isinstance(b, Tensor) else min(a, b)


def maximum(a: Scalar, b: Scalar) -> Scalar:
    """The larger of ``a`` and ``b`` (no tensor is created)."""
    if isinstance(a, Tensor):
        return torch.maximum(a, b) if isinstance(b, Tensor) else a.clamp(min=b)
    return b.clamp(min=a) if isinstance(b, Tensor) else max(a, b)


def power(x: Scalar, exponent: Scalar) -> Scalar:
    """``x ** exponent`` for ``x >= 0``, with ``0 ** negative = inf`` for floats as for tensors
    (Python raises ZeroDivisionError there)."""
    if isinstance(x, Tensor):
        return x ** exponent
    if x == 0.0 and not isinstance(exponent, Tensor) and exponent < 0:
        return math.inf
    return x ** exponent


def quotient(a: Scalar, b: Scalar) -> Scalar:
    """``a / b`` for ``a >= 0``, with ``a / 0 = inf`` for floats as for tensors (Python raises
    ZeroDivisionError there; a ``where`` evaluates both of its branches)."""
    if not isinstance(b, Tensor) and b == 0.0:
        return math.inf
    return a / b


def finite(x: Scalar) -> bool | Tensor:
    """Whether ``x`` is finite (elementwise for a tensor)."""
    return torch.isfinite(x) if isinstance(x, Tensor) else math.isfinite(x)

