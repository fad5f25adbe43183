"""The cubic Hermite interpolant of a step through its end states and end derivatives: the dense
output of the implicit methods (third order, costs no evaluation of func)."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def hermite(dense_info: tuple[Tensor, Tensor, Tensor, Tensor], t0: Any, h: Any, t: Any) -> Tensor:
    """The cubic through ``(t0, y0)`` and ``(t0 + h, y1)`` with slopes ``f0`` and ``f1`` at ``t``;
    ``dense_info = (y0, y1, f0, f1)``, each ``Tensor[*shape]``. Times may be floats or 0-dim tensors."""
    y0, y1, f0, f1 = dense_info
    theta = (t - t0) / h
    dy = y1 - y0
    bracket = dy * (1 - 2 * theta) + (f0 * (theta - 1) + f1 * theta) * h
    return y0 + dy * theta + bracket * (theta * (theta - 1))


def hermite_derivative(dense_info: tuple[Tensor, Tensor, Tensor, Tensor], t0: Any, h: Any, t: Any) -> Tensor:
    """d/dt of :func:`hermite` at ``t`` (``Tensor[*shape]``)."""
    y0, y1, f0, f1 = dense_info
    theta = (t - t0) / h
    dy = y1 - y0
    bracket = dy * (1 - 2 * theta) + (f0 * (theta - 1) + f1 * theta) * h
    slope = -2 * dy + (f0 + f1) * h
    return (dy + bracket * (2 * theta - 1) + slope * (theta * (theta - 1))) / h
