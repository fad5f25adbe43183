"""Parity checks between an exported graph and PyTorch, and argument checks shared by the
exporters. Tolerances default by dtype: float32 ``atol=1e-5, rtol=1e-4`` (operator fusion in
onnxruntime reorders sums), float64 ``atol=1e-10, rtol=1e-8``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from odegrad._checks import check_non_negative
from odegrad.errors import ParityMismatch

_DEFAULT_TOLERANCE = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4)}
_LOW_PRECISION = (1e-2, 1e-2)  # float16 / bfloat16


@dataclass(frozen=True)
class Tolerance:
    """Elementwise acceptance ``|got - expected| <= atol + rtol · |expected|``.

    Attributes:
        atol: absolute tolerance.
        rtol: relative tolerance.
    """

    atol: float
    rtol: float

    @classmethod
    def for_dtype(cls, dtype: torch.dtype, atol: float | None = None, rtol: float | None = None) -> Tolerance:
        """The tolerance for outputs of ``dtype``: ``atol``/``rtol`` where given, else the dtype's
        defaults (float64 1e-10 / 1e-8, float32 1e-5 / 1e-4, 16-bit 1e-2 / 1e-2).

        Raises:
            InvalidInput: ``atol`` or ``rtol`` is negative or not a number.
        """
        default_atol, default_rtol = _DEFAULT_TOLERANCE.get(dtype, _LOW_PRECISION)
        return cls(default_atol if atol is None else check_non_negative("atol", atol),
                   default_rtol if rtol is None else check_non_negative("rtol", rtol))


@dataclass(frozen=True)
class Parity:
    """Result of comparing an exported graph's output with PyTorch's on the same input.

    Attributes:
        max_abs_diff: largest ``|got - expected|`` (inf on a shape mismatch or NaN/Inf).
        max_rel_diff: largest ``|got - expected| / |expected|`` (inf likewise).
        tolerance: the tolerance compared against.
        ok: every element is within the tolerance (and all values are finite).
    """

    max_abs_diff: float
    max_rel_diff: float
    tolerance: Tolerance
    ok: bool

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (f"max |diff| {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g} "
                f"(atol {self.tolerance.atol:g}, rtol {self.tolerance.rtol:g}): {verdict}")


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def compare(expected: Any, got: Any, tolerance: Tolerance) -> Parity:
    """Compare two arrays/tensors of the same shape (a shape mismatch is a failed parity)."""
    expected, got = to_numpy(expected).astype(np.float64), to_numpy(got).astype(np.float64)
    if expected.shape != got.shape:
        return Parity(math.inf, math.inf, tolerance, False)
    diff = np.abs(got - expected)
    finite = bool(np.isfinite(got).all() and np.isfinite(expected).all())
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(expected), 1e-30)).max()) if diff.size else 0.0
    ok = finite and bool((diff <= tolerance.atol + tolerance.rtol * np.abs(expected)).all())
    return Parity(max_abs if finite else math.inf, max_rel if finite else math.inf, tolerance, ok)


def require_parity(expected: Any, got: Any, tolerance: Tolerance, what: str) -> Parity:
    """:func:`compare`, raising :class:`~odegrad.errors.ParityMismatch` when the outputs disagree."""
    parity = compare(expected, got, tolerance)
    if not parity.ok:
        shapes = f"shape {tuple(to_numpy(got).shape)} vs PyTorch {tuple(to_numpy(expected).shape)}"
        raise ParityMismatch(f"{what} does not reproduce PyTorch: {parity}; {shapes}. The file was not "
                          "written. Loosen atol/rtol if the difference is rounding, or check the "
                          "model for operations that behave differently at inference time")
    return parity


def resized_batch(example: Tensor, batch: int) -> Tensor:
    """``example`` with its batch dimension resized to ``batch`` by cycling its rows (a second
    batch size checks that the exported graph did not bake the example's batch size in)."""
    index = torch.arange(batch, device=example.device) % example.shape[0]
    return example[index]
