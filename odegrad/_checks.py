"""Argument checks shared by every layer: each raises :class:`~odegrad.errors.InvalidInput`
naming the argument, what it got and what was expected."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._counting import is_tracing
from .errors import InvalidInput, NonFiniteValue


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _within(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def _finite(value: float) -> bool:
    """``math.isfinite`` by comparisons, which ``torch.compile`` also traces for a float it has
    made symbolic (a tolerance that differs between two compiled models)."""
    return -math.inf < value < math.inf


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not _within(value, low, high, False, False):
        raise InvalidInput(name, value, "an integer" + _bounds(low, high, False, False))
    return value


def check_in_range(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds (open or closed at each end)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value)
            or not _within(value, low, high, low_open, high_open)):
        raise InvalidInput(name, value, "a finite number" + _bounds(low, high, low_open, high_open))
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    return check_in_range(name, value, low=0, low_open=True)


def check_non_negative(name: str, value: Any) -> float:
    """A finite number >= 0."""
    return check_in_range(name, value, low=0)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise InvalidInput(name, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def bad_batch_entries(y: Tensor) -> list[int]:
    """Indices along the first (batch) dimension of entries holding NaN or Inf."""
    if y.dim() < 2:
        return []
    return (~torch.isfinite(y)).reshape(y.shape[0], -1).any(dim=1).nonzero().flatten().tolist()


def check_state(name: str, y: Any) -> Tensor:
    """A floating-point tensor with finite entries (the finiteness check stands aside while a
    graph is traced)."""
    if not isinstance(y, Tensor):
        raise InvalidInput(name, type(y).__name__, "a Tensor")
    if not y.is_floating_point():
        raise InvalidInput(f"{name} dtype", str(y.dtype), "a floating-point dtype")
    if not is_tracing() and not bool(torch.isfinite(y).all()):
        raise NonFiniteValue(name, bad_indices=bad_batch_entries(y), phase="input")
    return y


def check_times(t: Any, y0: Tensor, open_end: bool = False, increasing: bool = False) -> Tensor:
    """``t`` as a strictly monotone 1-D tensor on y0's device (strictly increasing with
    ``increasing``); ``open_end``: its last time may be ±inf (an event search without an end time)."""
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidInput("t", type(t).__name__, "a 1-D tensor of times") from None
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidInput("t shape", str(tuple(t.shape)), "a non-empty 1-D tensor of times, or a 2-D "
                           "[batch, n_times] one for per-sample solving (each row a batch entry's times)")
    if not t.is_floating_point():
        raise InvalidInput("t dtype", str(t.dtype), "a floating-point dtype (e.g. torch.linspace)")
    if t.device != y0.device:
        raise InvalidInput("t device", str(t.device), f"{y0.device} (the device of y0)")
    if is_tracing() or t.numel() == 1:
        return t
    values = t.detach().tolist()  # one read (one device sync) for every check
    if not all(math.isfinite(v) for v in (values[:-1] if open_end else values)):
        raise InvalidInput("t", values, "finite times" + (" (t[-1] may be ±inf)" if open_end else ""))
    diffs = [b - a for a, b in zip(values, values[1:])]
    direction = 1.0 if increasing or diffs[0] > 0 else -1.0
    i = next((i for i, d in enumerate(diffs) if d * direction <= 0), None)
    if i is not None:
        what = "repeats a value" if diffs[i] == 0 else ("decreases" if increasing else "changes direction")
        raise InvalidInput("t", f"t[{i}]={values[i]:.10g}, t[{i + 1}]={values[i + 1]:.10g} ({what})",
                           "strictly increasing times" if increasing else
                           "strictly increasing or strictly decreasing times")
    return t


def check_sample_times(t: Any, y0: Tensor) -> Tensor:
    """A per-sample solve's ``t`` as ``Tensor[B, n]`` for states ``y0: Tensor[B, ...]``: a 2-D
    ``t`` whose rows are each strictly monotone (in either direction, row by row), or a 1-D ``t``
    shared by every entry (checked as :func:`check_times`, then repeated per entry).

    Raises:
        InvalidInput: naming ``t`` (its shape, dtype, device, or the first row that is not finite
            and strictly monotone) or ``y0`` (no batch dimension).
    """
    if y0.dim() == 0:
        raise InvalidInput("y0 shape", "()", "a batch dimension first in per-sample mode (y0[b] is problem b)")
    batch = y0.shape[0]
    if not (isinstance(t, Tensor) and t.dim() == 2):
        return check_times(t, y0).unsqueeze(0).expand(batch, -1)
    if t.shape[0] != batch or t.shape[1] == 0:
        raise InvalidInput("t shape", str(tuple(t.shape)), f"[batch, n_times] with batch = {batch} "
                           "(the first dimension of y0: one row of output times per problem)")
    if not t.is_floating_point():
        raise InvalidInput("t dtype", str(t.dtype), "a floating-point dtype (e.g. torch.linspace)")
    if t.device != y0.device:
        raise InvalidInput("t device", str(t.device), f"{y0.device} (the device of y0)")
    if is_tracing() or t.shape[1] == 1:
        return t
    rows = t.detach()
    steps = rows.diff(dim=1)
    monotone = ((steps > 0).all(dim=1) | (steps < 0).all(dim=1)) & torch.isfinite(rows).all(dim=1)
    if not bool(monotone.all()):
        row = int((~monotone).nonzero()[0])
        values = rows[row].tolist()
        raise InvalidInput(f"t[{row}]", values, "a finite, strictly increasing or strictly decreasing row "
                           "of output times (each row of a per-sample t is one problem's times)")
    return t


def check_signature(func: Any) -> None:
    """Refuse a ``func`` that is not callable as ``func(t, y)`` (two positional arguments), naming
    the signature found; callables whose signature Python cannot inspect are accepted.

    Raises:
        InvalidInput: ``func`` is not callable, or its signature cannot take (t, y).
    """
    if not callable(func):
        raise InvalidInput("func", type(func).__name__, "a callable func(t, y)")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins, some C extensions
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(func, "__qualname__", type(func).__name__)
        raise InvalidInput("func", f"{name}{signature}", "a callable accepting (t, y): the time and the "
                           "state, as torchdiffeq's func(t, y)") from None
