"""Contracts shared by every forward integrator: configuration, step records, solutions.

Two levels:

* :class:`Integrator` — anything that maps ``(func, y0, t)`` to a :class:`Solution`. Gradient
  backends talk only to this level, which is why every backend works with every integrator
  (including the torchdiffeq adapter).
* :class:`StepSolver` — a one-step method (``init`` + ``step`` + ``interpolate``) driven by the
  shared loop in :mod:`odegrad.solvers.loop` with a step-size controller.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

Func = Callable[[Tensor, Tensor], Tensor]
Norm = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor) -> Tensor:
    """Root-mean-square norm, the error norm of torchdiffeq and Hairer–Wanner."""
    return x.pow(2).mean().sqrt()


@dataclass
class Stats:
    """Cost counters of one solve. ``nfe_backward`` is filled in when the backward pass runs."""

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0


@dataclass
class StepRecord:
    """Per accepted step: start time, signed step size, local error estimate (the scaled norm
    compared with 1; NaN for methods without an embedded estimate) and stiffness estimate
    ‖k_last − k_prev‖ / ‖g_last − g_prev‖ · |h| (Hairer–Wanner), all shape ``[steps]``."""

    t: Tensor
    h: Tensor
    error: Tensor
    stiffness: Tensor


@dataclass
class IntegrationConfig:
    """Everything that controls one solve besides the method itself.

    Attributes:
        rtol, atol: relative / absolute tolerances of adaptive methods.
        max_steps: cap on accepted + rejected steps.
        step_size: fixed-step methods: step length (None: step on ``grid`` or on ``t``).
        grid: fixed-step methods: explicit strictly monotone times to step on.
        first_step: adaptive methods: initial step size (None: Hairer–Wanner heuristic).
        norm: error norm applied to the tolerance-scaled error estimate.
        controller: step-size controller of adaptive methods (None: default PI controller).
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 100_000
    step_size: float | None = None
    grid: Sequence[float] | None = None
    first_step: float | None = None
    norm: Norm = rms_norm
    controller: Any = None

    def with_updates(self, **changes: Any) -> IntegrationConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class Solution:
    """Result of a solve.

    Attributes:
        ys: states at the requested times, ``Tensor[len(t), *y0.shape]`` (tuple of such for tuple states).
        stats: NFE and step counts.
        steps: per-step records (None for integrators that cannot report them).
        dense: dense output over the whole span when requested (``keep_dense=True``).
    """

    ys: Any
    stats: Stats = field(default_factory=Stats)
    steps: StepRecord | None = None
    dense: DenseOutput | None = None


class StepResult(NamedTuple):
    """What one step of a :class:`StepSolver` returns."""

    y1: Tensor
    error: Tensor | None
    dense_info: Any
    state: Any
    stiffness: Tensor | None


class DenseOutput:
    """Piecewise continuous extension over accepted steps: ``evaluate(t)`` for any t in the span."""

    def __init__(self, solver: StepSolver, direction: float):
        self.solver = solver
        self.direction = direction
        self._starts: list[float] = []
        self._steps: list[tuple[float, float, Any]] = []

    def append(self, t0: float, h: float, dense_info: Any) -> None:
        self._starts.append(self.direction * t0)
        self._steps.append((t0, h, dense_info))

    def evaluate(self, t: float) -> Tensor:
        index = max(bisect.bisect_right(self._starts, self.direction * t) - 1, 0)
        t0, h, info = self._steps[index]
        return self.solver.interpolate(info, t0, h, t)

    @property
    def span(self) -> tuple[float, float]:
        t0, h, _ = self._steps[-1]
        return self._steps[0][0], t0 + h


class Integrator(ABC):
    """Anything that integrates ``dy/dt = func(t, y)`` and reports a :class:`Solution`."""

    name: str = "integrator"
    adaptive: bool = False

    @abstractmethod
    def integrate(self, func: Func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        """Solve from ``t[0]`` through every time in ``t`` (a strictly monotone 1-D tensor).

        Returns a Solution whose ``ys`` has shape ``[len(t), *y0.shape]``. Differentiable by
        plain autograd (the ``direct`` backend relies on it).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StepSolver(Integrator):
    """A one-step method driven by the shared loop.

    Subclasses implement ``init`` (state carried between steps, e.g. the FSAL derivative),
    ``step`` and ``interpolate``; ``order`` drives step-size control.
    """

    order: int = 1

    @abstractmethod
    def init(self, func: Func, t0: Tensor, y0: Tensor) -> Any:
        """State before the first step (e.g. ``func(t0, y0)``)."""

    @abstractmethod
    def step(self, func: Func, t0: float, h: float, y0: Tensor, state: Any) -> StepResult:
        """Advance from ``(t0, y0)`` by the signed step ``h``."""

    @abstractmethod
    def interpolate(self, dense_info: Any, t0: float, h: float, t: float) -> Tensor:
        """Continuous extension of the step ``[t0, t0 + h]`` evaluated at ``t``."""

    def integrate(self, func: Func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        from .loop import integrate_steps

        return integrate_steps(self, func, y0, t, config, keep_dense=keep_dense)


def time_tensor(value: float, like: Tensor) -> Tensor:
    """A 0-dim time tensor in the dtype/device of ``like`` (func receives t as a tensor)."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)
