"""nn.Modules built on :func:`odegrad.odeint`: the adaptive/fixed-step :class:`NeuralODE` block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .api import odeint
from .errors import InvalidInput


def _check_times(times: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(v) for v in (times.tolist() if isinstance(times, Tensor) else times))
    if len(values) < 2:
        raise InvalidInput("t", values, "at least two output times (start and end)")
    return values


class NeuralODE(nn.Module):
    """An ODE block ``y0 -> y(t_end)`` (or the whole trajectory) with a learned vector field.

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, y)``.
        t: output times (start first); kept as Python floats so fixed-step models trace to a
            static graph.
        method, gradient, rtol, atol, options: as in :func:`odegrad.odeint`.
        return_trajectory: return ``Tensor[len(t), *y0.shape]`` instead of the final state.

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]`` (final state) or
    ``Tensor[len(t), *batch, *state]`` with ``return_trajectory``.
    """

    def __init__(self, func: nn.Module, t: Sequence[float] | Tensor = (0.0, 1.0), *,
                 method: str = "dopri5", gradient: str = "direct", rtol: float = 1e-7, atol: float = 1e-9,
                 options: Mapping[str, Any] | None = None, return_trajectory: bool = False):
        super().__init__()
        if not isinstance(func, nn.Module):
            raise InvalidInput("func", type(func).__name__, "an nn.Module vector field func(t, y)")
        self.func = func
        self.times = _check_times(t)
        self.method = method
        self.gradient = gradient
        self.rtol = rtol
        self.atol = atol
        self.options = dict(options or {})
        self.return_trajectory = return_trajectory

    def forward(self, y0: Tensor) -> Tensor:
        t = torch.tensor(self.times, dtype=y0.dtype, device=y0.device)
        ys = odeint(self.func, y0, t, method=self.method, gradient=self.gradient, rtol=self.rtol,
                    atol=self.atol, options=self.options)
        return ys if self.return_trajectory else ys[-1]
