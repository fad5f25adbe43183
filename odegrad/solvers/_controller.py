"""Step-size control. :class:`PIController` holds every setting of it (tolerances, error norm,
first step, forced stops ``stops``/``jumps``, gains) and the rules (error ratio, acceptance, next
step, Hairer–Wanner initial step); a *stepping* object is one solve's controller state and decides
where the next step goes: acceptance, the next step size and landing on forced stops. The
integration loop only asks it.

* :class:`AdaptiveStepping` — embedded-error-controlled steps, clipped so that no step passes a
  forced stop (it lands on it exactly), as diffrax's ``PIDController`` + ``ClipStepSizeController``.
* :class:`FixedStepping` — the steps of a fixed grid, always accepted (the constant controller).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._checks import bad_batch_entries, check_in_range
from ..errors import IntegrationFailure, InvalidInput, MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow
from ._scalars import Scalar, const, finite, maximum, minimum, power, quotient, where
from ._time_axis import TimeAxis

if TYPE_CHECKING:
    from ._base import IntegrationConfig, StepResult

Norm = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor) -> Tensor:
    """Root-mean-square norm, the error norm of torchdiffeq and Hairer–Wanner."""
    return x.pow(2).mean().sqrt()


@dataclass(frozen=True, eq=False)
class PIController:
    """Proportional–integral step-size control of adaptive solves (Hairer, Nørsett & Wanner II,
    IV.2): the controller owns everything that decides where steps go — the tolerances and the
    error norm, the first step, the forced stops and the gains (diffrax's ``PIDController`` +
    ``ClipStepSizeController``).

    New step ``h · clip(safety · ε_n^(−β1/q) · ε_{n−1}^(β2/q), dfactor, ifactor)`` with ε the
    scaled error norm and q the method order. After an accepted step the step never shrinks.

    The gain defaults (β1 = 1, β2 = 0: pure integral control, safety 0.9, factors 0.2–10) reproduce
    torchdiffeq's step sequence, so NFE comparisons against it are like for like. Hairer's PI
    gains ``PIController(beta1=0.7, beta2=0.4)`` give smoother step sequences.

    Through ``odeint`` the tolerances, norm, first step and stops come from its arguments
    (``rtol``, ``atol``, ``options['norm']``, ``options['first_step']``, ``options['step_t']``,
    ``options['jump_t']``); a controller passed as ``options['controller']`` sets only the gains.

    Attributes:
        safety, ifactor, dfactor, beta1, beta2: the gains above.
        rtol, atol: relative / absolute tolerances: floats, or per-element tensors shaped like
            the (flat) state (``make_config`` broadcasts them).
        norm: error norm applied to the tolerance-scaled error estimate.
        first_step: the initial step size (None: the Hairer–Wanner heuristic).
        stops: times no step may pass (each is landed on exactly; ``step_t``).
        jumps: like ``stops``, and func may be discontinuous there: the step ending at a jump
            evaluates func just before it, and the solver's carried state (e.g. the FSAL
            derivative) is recomputed just after it (``jump_t``, as torchdiffeq).
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta1: float = 1.0
    beta2: float = 0.0
    rtol: float | Tensor = 1e-7
    atol: float | Tensor = 1e-9
    norm: Norm = rms_norm
    first_step: float | None = None
    stops: tuple[float, ...] = ()
    jumps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_in_range("PIController safety", self.safety, low=0, high=1, low_open=True)
        check_in_range("PIController ifactor", self.ifactor, low=1)
        check_in_range("PIController dfactor", self.dfactor, low=0, high=1, low_open=True)
        check_in_range("PIController beta1", self.beta1, low=0, low_open=True)
        check_in_range("PIController beta2", self.beta2, low=0)
        for name in ("rtol", "atol"):  # tensor tolerances are checked by make_config (no value read here)
            if not isinstance(getattr(self, name), Tensor):
                check_in_range(f"PIController {name}", getattr(self, name), low=0)
        if self.first_step is not None:
            check_in_range("PIController first_step", self.first_step, low=0, low_open=True)
        if not callable(self.norm):
            raise InvalidInput("PIController norm", self.norm, "a callable mapping a tensor to a scalar")

    def gains_only(self) -> bool:
        """Whether everything but the gains has its default (what a controller passed as
        ``options['controller']`` may set: odeint's arguments set the rest)."""
        return all(_is_default(getattr(self, name), getattr(PIController, name)) for name in SOLVE_SETTINGS)

    def scalar_tolerances(self) -> tuple[float, float]:
        """``(rtol, atol)`` as floats: per-element tolerances give their strictest (smallest) entry."""
        return _strictest(self.rtol), _strictest(self.atol)

    def with_scalar_tolerances(self, rtol: float | None = None, atol: float | None = None) -> PIController:
        """A copy with float tolerances: ``rtol``/``atol`` where given, else :meth:`scalar_tolerances`
        (a backward solve's state is not shaped like y)."""
        strict_rtol, strict_atol = self.scalar_tolerances()
        return replace(self, rtol=strict_rtol if rtol is None else rtol, atol=strict_atol if atol is None else atol)

    def error_ratio(self, y0: Tensor, y1: Tensor, error: Tensor) -> Tensor:
        """The step from ``y0`` to ``y1`` with error estimate ``error`` judged by this controller's
        tolerances and norm (:meth:`scaled_error`): a differentiable 0-dim tensor, ≤ 1 to accept."""
        return self.scaled_error(y0, y1, error, self.rtol, self.atol, self.norm)

    @staticmethod
    def scaled_error(y0: Tensor, y1: Tensor, error: Tensor, rtol: float | Tensor, atol: float | Tensor,
                     norm: Norm) -> Tensor:
        """The error ratio ``norm(error / (atol + rtol·max(|y0|, |y1|)))`` as a differentiable
        0-dim tensor: a step is accepted when it is at most 1 (local regularization trains on it)."""
        return norm(error / (atol + rtol * torch.maximum(y0.abs(), y1.abs())))

    def next_step(self, h: Scalar, ratio: Scalar, previous_ratio: Scalar, order: int,
                  accepted: bool | Tensor) -> Scalar:
        """Size of the next step after a step of size ``h`` with error ratio ``ratio``;
        Python floats (eager driver) or 0-dim float64 tensors (traced driver) alike.

        Args:
            h: the size of the step just judged (along the solve: positive).
            ratio: its scaled error (≤ 1: accepted).
            previous_ratio: the last accepted step's ratio (used when ``beta2`` > 0), 0 if none.
            order: the method's order q.
            accepted: whether the step was accepted (then the step never shrinks).
        """
        factor = const(self.safety) * power(ratio, const(-self.beta1 / order))  # ratio 0: inf, clipped to ifactor
        if self.beta2:
            factor = where(previous_ratio > 0, factor * power(previous_ratio, const(self.beta2 / order)), factor)
        clipped = where(accepted, maximum(factor, const(1.0)), maximum(factor, const(self.dfactor)))
        return h * minimum(clipped, const(self.ifactor))

    def constants(self, order: int) -> tuple[float, ...]:
        """The float constants :meth:`next_step` uses for a method of ``order`` (see
        :func:`~odegrad.solvers._scalars.exact_constants`)."""
        return (self.safety, -self.beta1 / order, self.beta2 / order, 1.0, self.dfactor, self.ifactor)


SOLVE_SETTINGS = ("rtol", "atol", "norm", "first_step", "stops", "jumps")
"""The :class:`PIController` fields odeint's arguments set (the others are its gains)."""


def _is_default(value: Any, default: Any) -> bool:
    return value is default or (not isinstance(value, Tensor) and type(value) is type(default) and value == default)


def _strictest(tolerance: float | Tensor) -> float:
    return float(tolerance.min()) if isinstance(tolerance, Tensor) else tolerance


def norm_tensor(value: Any) -> Tensor:
    """A norm's value in a traced solve: a one-element tensor as 0-dim float64 (its shape, not its
    value, is checked: nothing is read); anything else is refused by name."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.reshape(()).to(torch.float64)
    return _scalar(value)


def _scalar(value) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise InvalidInput("options['norm']", f"a norm returning {type(value).__name__}",
                       "a callable mapping a tensor to a scalar (a 0-dim tensor or a float)")


def initial_step(func, t0: Scalar, y0: Tensor, f0: Tensor, order: int, rtol: float | Tensor,
                 atol: float | Tensor, measure: Callable[[Tensor], Scalar], axis: TimeAxis) -> Scalar:
    """Hairer–Wanner starting step size (Solving ODEs I, II.4), the size along the solve
    (positive); costs one evaluation of func, at a trial step in the direction of ``axis`` (as
    torchdiffeq, which solves a reverse-time problem mirrored forwards). ``measure`` is the error
    norm as the driver reads it: a float (the eager driver), or a float64 tensor of one value per
    batch entry, shaped to broadcast against ``y0`` (the traced driver: nothing is read from a
    tensor); the step has the type and shape ``measure`` gives."""
    with torch.no_grad():
        scale = atol + y0.abs() * rtol
        d0, d1 = measure(y0 / scale), measure(f0 / scale)
        h0 = where((d0 < const(1e-5)) | (d1 < const(1e-5)), const(1e-6), const(0.01) * quotient(d0, d1))
        trial = axis.back(h0)
        f1 = func(t0 + trial, y0 + f0 * (trial.to(f0.dtype) if isinstance(trial, Tensor) else trial))
        d2 = quotient(measure((f1 - f0) / scale), h0)
        largest = maximum(d1, d2)
        h1 = where(largest <= const(1e-15), maximum(h0 * const(1e-3), const(1e-6)),
                   power(quotient(const(0.01), largest), const(1.0 / order)))
        h = minimum(const(100.0) * h0, h1)
        return where(finite(h) & (h > 0), h, const(1e-6))


def initial_step_constants(order: int) -> tuple[float, ...]:
    """The float constants :func:`initial_step` uses for a method of ``order`` (see
    :func:`~odegrad.solvers._scalars.exact_constants`)."""
    return (1e-5, 1e-6, 0.01, 1e-15, 1e-3, 100.0, 1.0 / order)


def fixed_grid(times: list[float], config: IntegrationConfig) -> list[float]:
    """The step points of a fixed-step solve through output ``times``: ``config.grid``, a grid of
    ``config.step_size`` (last step shortened to end on ``times[-1]``), or ``times`` themselves.
    The step count is checked against ``config.max_steps`` before any grid is built."""
    t0, t_end = times[0], times[-1]
    axis = TimeAxis.of(t0, t_end)
    if config.grid is not None:
        grid = [float(g) for g in config.grid]
        span_ok = len(grid) >= 2 and grid[0] == t0 and not axis.before(grid[-1], t_end)
        monotone = all(axis.before(a, b) for a, b in zip(grid, grid[1:]))
        if not (span_ok and monotone):
            got = f"{len(grid)} times" + (f" from {grid[0]} to {grid[-1]}" if grid else "")
            raise InvalidInput("options['grid']", got,
                               f"strictly monotone times starting at t[0]={t0} and reaching "
                               f"t[-1]={t_end}")
        steps = len(grid) - 1
    elif config.step_size is None:
        grid, steps = times, len(times) - 1
    else:
        span = abs(t_end - t0) / config.step_size  # inf for a step_size far below the span
        steps = max(1, math.ceil(span - 1e-9)) if math.isfinite(span) else math.inf
        grid = None
    if steps > config.max_steps:
        raise MaxStepsExceeded(f"the fixed grid needs {steps} steps but max_steps is {config.max_steps}",
                               t=t0, t_end=t_end, nfe=0)
    if grid is None:
        grid = [t0 + axis.back(config.step_size) * i for i in range(steps)]
        grid.append(t_end)
    return grid


class FixedStepping:
    """The constant controller of fixed-step methods: the steps of :func:`fixed_grid`, each
    accepted. Reads no tensor values, so fixed-step solves trace to one static graph.

    Args:
        times: the output times of the solve (Python floats, strictly monotone).
        config: supplies ``grid``, ``step_size`` and ``max_steps`` (see :func:`fixed_grid`).

    An infinite ``times[-1]`` (an event search without an end time) steps by ``config.step_size``
    from ``times[0]`` for as long as the loop asks, the points made as :func:`fixed_grid` makes them.

    Raises:
        InvalidInput: ``config.grid`` does not start at ``times[0]`` and reach ``times[-1]``, or
            ``times[-1]`` is infinite and there is no ``config.step_size``.
        MaxStepsExceeded: the grid has more than ``config.max_steps`` steps.
    """

    ratio = math.nan
    jumped = False
    next_step = None

    def __init__(self, times: list[float], config: IntegrationConfig):
        self.axis = TimeAxis.of(times[0], times[-1])
        self.stride: float | None = None
        if math.isinf(times[-1]):
            if config.step_size is None:
                raise InvalidInput("options['step_size']", None,
                                   "a step size: a fixed-step method searching for an event without "
                                   "an end time steps by it (as torchdiffeq)")
            self.grid = [times[0]]
            self.stride = self.axis.back(config.step_size)
        else:
            self.grid = fixed_grid(times, config)
        self.index = 0

    @property
    def t(self) -> float:
        """Start time of the next step (the current grid point)."""
        return self.grid[self.index]

    def start(self, func, y0: Tensor, f0: Any) -> None:
        """Nothing to choose: the grid is fixed (the arguments are those of
        :meth:`AdaptiveStepping.start`)."""

    def propose(self) -> tuple[float, float, float]:
        """The next grid step ``(t0, t1, h = t1 - t0)``."""
        if self.stride is not None and self.index + 1 == len(self.grid):
            self.grid.append(self.grid[0] + self.stride * (self.index + 1))
        t0, t1 = self.grid[self.index], self.grid[self.index + 1]
        return t0, t1, t1 - t0

    def judge(self, y0: Tensor, result: StepResult, t0: float, t1: float, h: float, nfe: int) -> bool:
        """Accept the step and move to the next grid point; returns True.

        Raises:
            IntegrationFailure: an implicit method's Newton iteration failed (a fixed step cannot shrink).
        """
        if not bool(result.converged):
            raise IntegrationFailure("the Newton iteration of an implicit stage did not converge at "
                                     f"the fixed step h={h:.3g}; use a smaller step_size or an adaptive "
                                     "implicit method (e.g. kvaerno5)", t=t0, t_end=self.grid[-1], nfe=nfe)
        self.index += 1
        return True


class AdaptiveStepping:
    """One adaptive solve's step control from ``t0`` towards ``t_end``.

    ``propose()`` gives the next step ``(t0, t1, h)``: the controller's step size h, clipped so it
    ends exactly on the next forced stop (the controller's ``stops`` and ``jumps``) rather than
    passing it. ``judge()`` scales the error, accepts or rejects, chooses the next step size and
    raises :class:`NonFiniteValue` / :class:`StepSizeUnderflow` with the time and the NFE.
    After an accepted step ``jumped`` says whether it ended on a jump (the solver's carried state
    must be recomputed) and ``ratio`` is its error ratio. Inside, times and step sizes are kept
    along the solve (its :class:`TimeAxis`, fixed here once); what it takes and gives is in ``t``.

    Args:
        solver_order: order of the method (the exponent of the controller's step-size update).
        times: the output times (Python floats); the solve runs from ``times[0]`` to ``times[-1]``.
        config: its ``controller`` (tolerances, norm, first step, stops, jumps and gains).
    """

    def __init__(self, solver_order: int, times: list[float], config: IntegrationConfig):
        self.controller = controller = config.controller
        self.order = solver_order
        self.axis = axis = TimeAxis.of(times[0], times[-1])
        self.s, self.s_end = axis.along(times[0]), axis.along(times[-1])
        self.stops = sorted({s for s in (axis.along(float(x)) for x in (*controller.stops, *controller.jumps))
                             if self.s < s <= self.s_end})
        self.jumps = {float(s) for s in controller.jumps}
        self.h = math.nan  # along the solve: positive
        self.ratio = math.nan
        self.previous_ratio = 0.0
        self.jumped = False

    @property
    def t(self) -> float:
        """The time reached (the start of the next step)."""
        return self.axis.back(self.s)

    @property
    def next_step(self) -> float:
        """The signed step size the controller proposes next (not clipped by stops)."""
        return self.axis.back(self.h)

    def start(self, func, y0: Tensor, f0: Tensor) -> None:
        """Choose the first step: the controller's ``first_step`` or the Hairer–Wanner heuristic
        (one extra evaluation of ``func``) from the initial state ``y0`` and its derivative ``f0``."""
        c = self.controller
        size = c.first_step if c.first_step is not None else initial_step(
            func, self.t, y0, f0, self.order, c.rtol, c.atol, lambda x: _scalar(c.norm(x)), self.axis)
        self.h = abs(size)

    def propose(self) -> tuple[float, float, float]:
        """The next step ``(t0, t1, h)``: the controller's step, shortened to end exactly on the
        next forced stop when it would reach or pass it."""
        index = bisect.bisect_right(self.stops, self.s)
        s1, h = clip_to_stop(self.s, self.h, self.stops[index] if index < len(self.stops) else math.inf)
        return self.t, self.axis.back(s1), self.axis.back(h)

    def judge(self, y0: Tensor, result: StepResult, t0: float, t1: float, h: float, nfe: int) -> bool:
        """Accept (error ratio ≤ 1) or reject the step ``result`` from ``(t0, y0)`` to ``t1`` and
        choose the next step size; ``nfe`` (evaluations so far) goes into the errors.

        Returns:
            Whether the step is accepted (then ``t`` moves to ``t1``).

        Raises:
            NonFiniteValue: the error ratio is NaN or Inf (func produced a non-finite value).
            StepSizeUnderflow: the next step size no longer moves ``t`` before the end.
        """
        failed = not bool(result.converged)  # an implicit stage's Newton failed: reject, shrink by dfactor
        with torch.no_grad():
            ratio = math.inf if failed else _scalar(self.controller.error_ratio(y0, result.y1, result.error))
        if not math.isfinite(ratio) and not failed:
            raise NonFiniteValue("a value produced by func", t=t0, nfe=nfe,
                                 bad_indices=bad_batch_entries(result.y1.detach()))
        accepted = ratio <= 1.0
        if accepted:
            self.s, self.ratio, self.jumped = self.axis.along(t1), ratio, t1 in self.jumps
            self.previous_ratio = ratio
        self.h = stepped_size(self.controller, self.axis.along(h), self.h, ratio, self.previous_ratio, self.order,
                              accepted)
        if underflow(self.s, self.h, self.s_end):
            raise StepSizeUnderflow(f"step size underflow: h={self.next_step:.3g} at error ratio {ratio:.3g}",
                                    t=self.t, t_end=self.axis.back(self.s_end), nfe=nfe)
        return accepted


def stepped_size(controller: PIController, h: Scalar, proposal: Scalar, ratio: Scalar, previous_ratio: Scalar,
                 order: int, accepted: bool | Tensor) -> Scalar:
    """The controller's next step after the step ``h`` judged with error ``ratio``, for both
    drivers (step sizes along the solve: positive). An accepted step that was clipped to land on
    a stop (``h`` shorter than the controller's ``proposal``) does not shrink the proposal: the
    clip, not the error, set its size, and a sliver before a stop (down to a subnormal
    h = stop − s) would otherwise throttle or underflow the steps after it (as diffrax's
    controllers keep the unclipped step across jumps)."""
    following = controller.next_step(h, ratio, previous_ratio, order, accepted)
    return where(accepted & (h != proposal), maximum(following, proposal), following)


def underflow(s: Scalar, h: Scalar, s_end: Scalar) -> bool | Tensor:
    """Whether the step size ``h`` no longer moves ``s`` before the end ``s_end`` (along the solve)."""
    return (s_end > s) & ((s + h == s) | (h < const(1e-300)))


def clip_to_stop(s: Scalar, h: Scalar, stop: Scalar) -> tuple[Scalar, Scalar]:
    """``(s1, h)`` of the step from ``s`` of size ``h`` (along the solve), shortened to end exactly
    on the forced stop ``stop`` when it would reach or pass it (``stop`` +inf: none)."""
    clipped = s + h - stop >= 0
    return where(clipped, stop, s + h), where(clipped, stop - s, h)
