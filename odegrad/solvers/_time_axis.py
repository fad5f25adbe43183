"""The direction of a solve, decided once where its times enter.

Step control works on the time *along the solve*, ``s = sign · t``, which increases from the
start to the end whichever way ``t`` runs: forced stops, step clipping, underflow and the
controller's step sizes (positive along the solve) never see a direction. The step solver, its
dense output and the per-step observers keep the user's ``t`` and signed steps ``h = sign · |h|``;
negation is exact, so both sides hold the same floats (a reverse-time solve takes exactly the
steps of the mirrored forward one, without wrapping ``func`` in ``-f(-t, y)`` as torchdiffeq and
diffrax do, which would cost an operation per evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import InvalidInput
from ._scalars import Scalar


class TimeAxis(NamedTuple):
    """The direction of one solve (or, per sample, of each batch entry).

    Attributes:
        sign: ``1.0`` when the solve runs forwards in ``t``, ``-1.0`` backwards; a tensor of ±1
            per entry, in the times' dtype and shaped to broadcast against what it multiplies, for
            the traced driver and per-sample solves (:meth:`of_rows`).
    """

    sign: Scalar

    @classmethod
    def of(cls, start: float, end: float) -> TimeAxis:
        """The axis of a solve from ``start`` to ``end`` (±inf allowed: an event search without an
        end; ``start == end``, a solve of one time, counts as forwards).

        Raises:
            InvalidInput: ``start`` or ``end`` is NaN (no direction).
        """
        if math.isnan(start) or math.isnan(end):
            raise InvalidInput("time span", f"{start} to {end}", "two times that are not NaN (a solve's start and end)")
        return cls(1.0 if end >= start else -1.0)

    @classmethod
    def of_rows(cls, times: Tensor, *trailing: int) -> TimeAxis:
        """The axes of per-entry solves through the rows of ``times`` (``Tensor[B, n]``, ``n ≥ 2``,
        each row strictly monotone: checked where ``t`` enters, as nothing is read here): signs
        shaped ``[B, *trailing]`` (e.g. ``1, 1`` to broadcast against ``[B, k, m]``)."""
        return cls(torch.sign(times[:, -1] - times[:, 0]).reshape(-1, *trailing))

    def along(self, t: Scalar) -> Scalar:
        """The time (or a signed step) ``t`` as a time (step) along the solve."""
        return self.sign * t

    def back(self, s: Scalar) -> Scalar:
        """The time (or step) ``s`` along the solve as the user's signed ``t`` (``along``'s inverse)."""
        return self.sign * s

    def before(self, a: float, b: float) -> bool:
        """Whether ``a`` comes strictly before ``b`` in the solve."""
        return self.sign * (b - a) > 0

    def between(self, points: Iterable[float], a: float, b: float) -> list[float]:
        """The ``points`` strictly between ``a`` and ``b`` (``a`` first in this solve), in solve order."""
        return self.ordered(p for p in points if self.before(a, p) and self.before(p, b))

    def ordered(self, times: Iterable[float]) -> list[float]:
        """``times`` sorted in solve order."""
        return sorted(times, key=self.along)
