"""Contracts shared by every forward integrator: configuration, step records, solutions.

Two levels:

* :class:`Integrator` — anything that maps ``(func, y0, t)`` to a :class:`Solution`. Gradient
  backends talk only to this level, which is why every backend works with every integrator
  (including the torchdiffeq adapter).
* :class:`~odegrad.solvers.StepSolver` — a one-step method (``init`` + ``step`` +
  ``interpolate``) driven by the shared loop with a step-size controller.

Every integrator declares its capabilities (``order``, ``error_estimate``, ``has_dense_output``,
``supports_autograd_func``) so that gradient backends, the api and the tests ask instead of
probing by exceptions or by method names.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from torch import Tensor

Func = Callable[[Tensor, Tensor], Tensor]
Norm = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor) -> Tensor:
    """Root-mean-square norm, the error norm of torchdiffeq and Hairer–Wanner."""
    return x.pow(2).mean().sqrt()


@dataclass
class Stats:
    """Cost counters of one solve. ``nfe_backward`` is filled in when the backward pass runs.

    Attributes:
        nfe_forward: evaluations of func during the forward solve.
        nfe_backward: evaluations of func (and of the adjoint system) during the backward pass.
        steps_accepted, steps_rejected: accepted / rejected steps of the forward solve.
    """

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
        stops: adaptive methods: times no step may pass (each is landed on exactly).
        jumps: adaptive methods: like ``stops``, and func may be discontinuous there, so the
            solver's carried state (e.g. the FSAL derivative) is recomputed after each (``jump_t``).
        check_backward: ``direct`` backend: raise NonFiniteValue when a NaN/Inf gradient flows
            back through an evaluation of func (adjoint-type backends always check).
        observer: adaptive methods: called after every accepted step as
            ``observer(t0, t1, h, y0, y1, next_h)`` with detached states and the controller's
            next proposed step (local regularization samples steps with it).
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 100_000
    step_size: float | None = None
    grid: Sequence[float] | None = None
    first_step: float | None = None
    norm: Norm = rms_norm
    controller: Any = None
    stops: tuple[float, ...] = ()
    jumps: tuple[float, ...] = ()
    check_backward: bool = False
    observer: Callable[..., None] | None = None

    def for_backward(self) -> IntegrationConfig:
        """This configuration for a backward solve: without the forward solve's observer and
        forced stops (jumps, discontinuities of func, stay)."""
        return replace(self, observer=None, stops=())

    def with_updates(self, **changes: Any) -> IntegrationConfig:
        """A copy with the given fields replaced; ``None`` values keep the current setting."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class Solution:
    """Result of a solve.

    Attributes:
        ys: states at the requested times, ``Tensor[len(t), *y0.shape]`` (tuple of such for tuple states).
        stats: NFE and step counts.
        steps: per-step records (None for integrators that cannot report them).
        dense: dense output over the whole span when requested (``keep_dense=True``).
        next_step: adaptive methods: the step size the controller proposed after the last step
            (unclipped by stops), the natural first step of a solve that continues this one.
        regularization: with ``solve(..., regularization=...)``: the scalar regularization
            term, differentiable in func's parameters (None without a regularizer).
    """

    ys: Any
    stats: Stats = field(default_factory=Stats)
    steps: StepRecord | None = None
    dense: DenseOutput | None = None
    next_step: float | None = None
    regularization: Tensor | None = None


class StepResult(NamedTuple):
    """What one step of a :class:`~odegrad.solvers.StepSolver` returns."""

    y1: Tensor
    error: Tensor | None
    dense_info: Any
    state: Any
    stiffness: Tensor | None


class DenseOutput:
    """Piecewise continuous extension over accepted steps: ``evaluate(t)`` for any t in the span.

    Args:
        solver: the step solver whose ``interpolate(dense_info, t0, h, t)`` evaluates one step.
        direction: ``1.0`` for a forward solve, ``-1.0`` for a backward one (steps are looked up
            by ``direction · t``).
    """

    def __init__(self, solver: Any, direction: float):
        self.solver = solver
        self.direction = direction
        self._starts: list[float] = []
        self._steps: list[tuple[float, float, Any]] = []

    def append(self, t0: float, h: float, dense_info: Any) -> None:
        """Record the accepted step ``[t0, t0 + h]`` (in solve order) and its ``dense_info``."""
        self._starts.append(self.direction * t0)
        self._steps.append((t0, h, dense_info))

    def evaluate(self, t: float) -> Tensor:
        """The state at time ``t``, ``Tensor[*y0.shape]``, from the step that contains t (times
        before the first step use the first step's extension)."""
        index = max(bisect.bisect_right(self._starts, self.direction * t) - 1, 0)
        t0, h, info = self._steps[index]
        return self.solver.interpolate(info, t0, h, t)



class Integrator(ABC):
    """Anything that integrates ``dy/dt = func(t, y)`` and reports a :class:`Solution`.

    Capabilities (class or instance attributes):
        order: order of accuracy (None where unknown).
        error_estimate: adaptive: an embedded error estimate drives step-size control.
        has_dense_output: ``integrate(..., keep_dense=True)`` returns ``Solution.dense``.
        supports_autograd_func: can integrate a func that calls ``torch.autograd.grad`` (the
            adjoint systems of backsolve, gq and interp); checked before any forward solve.
    """

    name: str = "integrator"
    order: int | None = None
    error_estimate: bool = False
    has_dense_output: bool = False
    supports_autograd_func: bool = True

    @abstractmethod
    def integrate(self, func: Func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        """Solve from ``t[0]`` through every time in ``t`` (a strictly monotone 1-D tensor).

        Returns a Solution whose ``ys`` has shape ``[len(t), *y0.shape]``. Differentiable by
        plain autograd (the ``direct`` backend relies on it). ``keep_dense`` is honoured only by
        integrators with ``has_dense_output``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
