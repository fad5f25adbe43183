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
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import InvalidInput
from ._controller import PIController
from ._time_axis import TimeAxis

Func = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Stats:
    """Cost counters of one solve. ``nfe_backward`` is filled in when the backward pass runs.

    Attributes:
        nfe_forward: evaluations of func during the forward solve.
        nfe_backward: evaluations of func (and of the adjoint system) during the backward pass.
        steps_accepted, steps_rejected: accepted / rejected steps of the forward solve.
        jacobian_evals, lu_factorizations, newton_iterations, newton_failures: implicit methods'
            Jacobians formed, iteration matrices factored, Newton iterations and failed Newton
            solves (each rejects its step) in the forward solve; 0 for explicit methods.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    jacobian_evals: int = 0
    lu_factorizations: int = 0
    newton_iterations: int = 0
    newton_failures: int = 0


@dataclass
class StepRecord:
    """Per accepted step: start time, signed step size, local error estimate (the scaled norm
    compared with 1; NaN for methods without an embedded estimate) and stiffness estimate
    ‖k_last − k_prev‖ / ‖g_last − g_prev‖ · |h| (Hairer–Wanner), all shape ``[steps]``."""

    t: Tensor
    h: Tensor
    error: Tensor
    stiffness: Tensor


class AcceptedStep(NamedTuple):
    """What a per-step observer sees of an accepted step from ``t0`` to ``t1 = t0 + h``: the
    states at its ends, ``at(t)`` (its interpolant at a float time in it) and the controller's
    next proposed step size ``next_h`` (None for fixed-step methods)."""

    t0: float
    t1: float
    h: float
    y0: Tensor
    y1: Tensor
    at: Callable[[float], Tensor]
    next_h: float | None


@dataclass
class IntegrationConfig:
    """Everything that controls one solve besides the method itself.

    Attributes:
        controller: the step-size control of adaptive methods (a :class:`PIController`: its
            tolerances, norm, first step, forced stops and gains); fixed-step methods read none of it.
        max_steps: cap on accepted + rejected steps.
        step_size: fixed-step methods: step length (None: step on ``grid`` or on ``t``).
        grid: fixed-step methods: explicit strictly monotone times to step on.
        perturb: fixed-step methods: evaluate func one representable time inside each step at
            its ends (torchdiffeq's ``perturb``): every grid point is a possible discontinuity.
        check_backward: ``direct`` backend: raise NonFiniteValue when a NaN/Inf gradient flows
            back through an evaluation of func (adjoint-type backends always check).
        observers: per-step hooks that compose (events, gq's node reader, interp's window
            fitter, the local-regularization sampler): each is called after every accepted step
            with an :class:`AcceptedStep` and returns None, or a time inside the step at which
            the solve ends (event search: outputs before it are kept and the state at it is the
            last output; the earliest such time wins). Add one with :meth:`with_observer`.
        interp: fixed-step methods: how a step is evaluated between its ends (output times,
            dense output, event search): ``"cubic"`` (the method's cubic Hermite extension) or
            ``"linear"`` (torchdiffeq's ``interp`` option, whose default is ``"linear"``).
        driver: adaptive methods: ``"eager"`` (a Python loop: raises errors, runs observers,
            records per-step data), ``"traced"`` (one ``torch.while_loop``: compiles and exports
            as one graph) or ``"auto"`` (traced while ``torch.compile`` traces the solve and it
            needs nothing only the eager driver does; eager otherwise).
        per_sample: adaptive methods: the first dimension of the state indexes independent
            problems, each with its own steps (``options['per_sample']``; a 2-D ``t`` implies it).
        record_stiffness: compute each accepted step's stiffness estimate for
            ``Solution.steps`` (else NaN there): off where nobody reads the records
            (``odeint``, ``unroll``, backward solves), which saves its ops on every step.
    """

    controller: PIController = field(default_factory=PIController)
    max_steps: int = 100_000
    step_size: float | None = None
    grid: Sequence[float] | None = None
    perturb: bool = False
    check_backward: bool = False
    observers: tuple[Callable[[AcceptedStep], float | None], ...] = ()
    interp: str = "cubic"
    record_stiffness: bool = True
    driver: str = "auto"
    per_sample: bool = False

    def for_backward(self, rtol: float | None = None, atol: float | None = None) -> IntegrationConfig:
        """This configuration for a backward solve: without the forward solve's observers and
        forced stops (its jumps, discontinuities of func, stay), with float tolerances (``rtol``/
        ``atol`` where given, else the forward's strictest: a backward state is not shaped like
        y), no stiffness records and the ``"auto"`` driver."""
        controller = replace(self.controller.with_scalar_tolerances(rtol, atol), stops=())
        return replace(self, observers=(), controller=controller, record_stiffness=False, driver="auto")

    def with_controller(self, **changes: Any) -> IntegrationConfig:
        """A copy whose controller has the given fields replaced (e.g. ``stops=``, ``first_step=``).

        Raises:
            InvalidInput: a name that is no field of the controller, or a value it refuses.
        """
        unknown = sorted(set(changes) - {f.name for f in fields(self.controller)})
        if unknown:
            raise InvalidInput("with_controller field", unknown[0],
                               f"one of {', '.join(f.name for f in fields(self.controller))}")
        return replace(self, controller=replace(self.controller, **changes))

    def with_observer(self, observer: Callable[[AcceptedStep], float | None]) -> IntegrationConfig:
        """A copy with ``observer`` added after the current observers."""
        return replace(self, observers=(*self.observers, observer))



@dataclass
class Solution:
    """Result of a solve.

    Attributes:
        ys: states at the requested times, ``Tensor[len(t), *y0.shape]`` (tuple of such for tuple states).
        stats: NFE and step counts.
        steps: per-step records (None for integrators that cannot report them).
        dense: dense output over the whole span when requested (``solve(..., dense=True)``;
            ``keep_dense=True`` of an integrator); read it with :meth:`evaluate` and :meth:`derivative`.
        next_step: adaptive methods: the step size the controller proposed after the last step
            (unclipped by stops), the natural first step of a solve that continues this one.
        regularization: with ``solve(..., regularization=...)``: the scalar regularization
            term, differentiable in func's parameters (None without a regularizer).
        event_t: with ``solve(..., events=...)``: the time (0-dim, differentiable) at which a
            terminal event ended the solve, None when none fired.
        event_times: with ``solve(..., events=...)``: per event, in order, a 1-D tensor of the
            times it fired (differentiable; a terminal event fires at most once).
        status: solves by the traced driver: how the solve ended, a 0-dim int64 tensor holding a
            :class:`~odegrad.solvers.Status` (0: success; under ``torch.compile`` a failed solve
            returns NaN for the outputs it did not reach instead of raising). None for the eager
            driver, which raises.
    """

    ys: Any
    stats: Stats = field(default_factory=Stats)
    steps: StepRecord | None = None
    dense: DenseOutput | None = None
    next_step: float | None = None
    regularization: Tensor | None = None
    event_t: Tensor | None = None
    event_times: list[Tensor] | None = None
    status: Tensor | None = None

    def evaluate(self, t: float | Tensor) -> Any:
        """The solution at time(s) ``t`` inside the solved span from the dense output (see
        :meth:`DenseOutput.evaluate` for shapes and what is differentiable).

        Raises:
            InvalidInput: the solve kept no dense output, or a time lies outside the span.
        """
        return self._dense_at(t).evaluate(t)

    def derivative(self, t: float | Tensor) -> Any:
        """dy/dt of the dense output at time(s) ``t`` inside the solved span (see
        :meth:`DenseOutput.derivative`).

        Raises:
            InvalidInput: the solve kept no dense output, or a time lies outside the span.
        """
        return self._dense_at(t).derivative(t)

    def _dense_at(self, t: float | Tensor) -> DenseOutput:
        if self.dense is None:
            raise InvalidInput("dense", "a solution without dense output",
                               "solve(..., dense=True) over at least two times (with a method that "
                               "has dense output)")
        return self.dense.check_times(t)


class StepResult(NamedTuple):
    """What one step of a :class:`~odegrad.solvers.StepSolver` returns; ``stiffness`` computes the
    step's stiffness estimate when called (the loop calls it only when the solve records it), or
    is None for methods without one. ``converged`` is False (or a False 0-dim tensor) when an
    implicit method's Newton iteration failed: the step is rejected and h shrinks."""

    y1: Tensor
    error: Tensor | None
    dense_info: Any
    state: Any
    stiffness: Callable[[], Tensor] | None
    converged: bool | Tensor = True


class DenseOutput:
    """Piecewise continuous extension over accepted steps: ``evaluate(t)`` and ``derivative(t)``
    for any t in the span.

    Args:
        solver: evaluates one step: ``interpolate(dense_info, t0, h, t)`` and
            ``interpolate_derivative(dense_info, t0, h, t)`` (the step solver, or its linear
            interpolation).
        axis: the direction of the solve (steps are looked up by their time along it).

    Attributes:
        unflatten: None, or the map from a flat state (with leading dimensions) to the user's
            tuple state, applied to what ``evaluate``/``derivative`` return (set by the api).
    """

    def __init__(self, solver: Any, axis: TimeAxis):
        self.solver = solver
        self.axis = axis
        self.unflatten: Callable[[Tensor], Any] | None = None
        self._starts: list[float] = []
        self._steps: list[tuple[float, float, Any]] = []

    def map_output(self, fn: Callable[[Any], Any]) -> None:
        """Apply ``fn`` to what ``evaluate``/``derivative`` return, after :attr:`unflatten` (e.g.
        cut a regularizer's accumulators off an augmented state, then split a tuple state)."""
        inner = self.unflatten
        self.unflatten = fn if inner is None else lambda out: fn(inner(out))

    def append(self, t0: float, h: float, dense_info: Any) -> None:
        """Record the accepted step ``[t0, t0 + h]`` (in solve order) and its ``dense_info``."""
        self._starts.append(self.axis.along(t0))
        self._steps.append((t0, h, dense_info))

    @property
    def span(self) -> tuple[float, float]:
        """``(start, end)`` of the steps recorded, in solve order."""
        last_t0, last_h, _ = self._steps[-1]
        return self._steps[0][0], last_t0 + last_h

    def check_times(self, t: float | Tensor) -> DenseOutput:
        """This dense output, after checking that every time in ``t`` lies in :attr:`span`.

        Raises:
            InvalidInput: a time is not finite or lies outside the span.
        """
        start, end = self.span
        values = t.detach().reshape(-1).tolist() if isinstance(t, Tensor) else [t]
        low, high = min(start, end), max(start, end)
        outside = [v for v in values if not isinstance(v, (int, float)) or not low <= v <= high]
        if outside:
            raise InvalidInput("t", outside[0], f"times within the solved span [{low:.10g}, {high:.10g}]")
        return self

    def evaluate(self, t: float | Tensor) -> Any:
        """The state at time ``t`` from the step that contains it (times before the first step use
        the first step's extension). A float or 0-dim ``t`` gives ``Tensor[*y0.shape]``, a tensor
        of times ``Tensor[*t.shape, *y0.shape]``. Differentiable in what the steps were computed
        from when the solve kept an autograd graph (``gradient="direct"``: y0 and func's
        parameters) and in a tensor ``t`` (with :meth:`derivative` as d/dt)."""
        out = self._flat(t, self.solver.interpolate)
        if isinstance(t, Tensor) and t.requires_grad:
            shift = (t - t.detach()).to(out.dtype).reshape(*t.shape, *[1] * (out.dim() - t.dim()))
            out = out + shift * self._flat(t, self.solver.interpolate_derivative)
        return out if self.unflatten is None else self.unflatten(out)

    def derivative(self, t: float | Tensor) -> Any:
        """dy/dt of the dense output at ``t`` (shapes as :meth:`evaluate`): the derivative of the
        step's interpolating polynomial, which costs no evaluation of func."""
        out = self._flat(t, self.solver.interpolate_derivative)
        return out if self.unflatten is None else self.unflatten(out)

    def _flat(self, t: float | Tensor, rule: Callable[..., Tensor]) -> Tensor:
        if not isinstance(t, Tensor):
            return self._one(rule, float(t))
        values = [self._one(rule, v) for v in t.detach().reshape(-1).tolist()]
        if not values:  # no times: an empty result shaped like the states
            state = self._one(rule, self._steps[0][0])
            return state.new_empty((*t.shape, *state.shape))
        return torch.stack(values).reshape(*t.shape, *values[0].shape)

    def _one(self, rule: Callable[..., Tensor], t: float) -> Tensor:
        index = max(bisect.bisect_right(self._starts, self.axis.along(t)) - 1, 0)
        t0, h, info = self._steps[index]
        return rule(info, t0, h, t)


class LinearInterpolation:
    """A step solver's steps read by linear interpolation between their ends (torchdiffeq's
    ``interp="linear"`` for fixed-step methods): the same ``interpolate`` /
    ``interpolate_derivative`` interface as the solver.

    Args:
        solver: the step solver whose step ends (``interpolate`` at ``t0`` and ``t0 + h``) are joined.
    """

    def __init__(self, solver: Any):
        self.solver = solver

    def interpolate(self, dense_info: Any, t0: float, h: float, t: float) -> Tensor:
        """``y0 + θ (y1 − y0)`` with ``θ = (t − t0) / h``."""
        y0, y1 = self._ends(dense_info, t0, h)
        return y0 + (y1 - y0) * ((t - t0) / h)

    def interpolate_derivative(self, dense_info: Any, t0: float, h: float, t: float) -> Tensor:
        """``(y1 − y0) / h``, constant over the step."""
        y0, y1 = self._ends(dense_info, t0, h)
        return (y1 - y0) / h

    def _ends(self, dense_info: Any, t0: float, h: float) -> tuple[Tensor, Tensor]:
        return (self.solver.interpolate(dense_info, t0, h, t0),
                self.solver.interpolate(dense_info, t0, h, t0 + h))


def step_interpolation(solver: Any, interp: str) -> Any:
    """How the loop reads a step between its ends: the solver's own extension (``"cubic"``) or
    :class:`LinearInterpolation` (``"linear"``)."""
    return LinearInterpolation(solver) if interp == "linear" else solver


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
