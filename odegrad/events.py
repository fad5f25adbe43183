"""Events: zero crossings of ``fn(t, y)`` found during a solve — ``solve(..., events=[Event(...)])``,
torchdiffeq's ``odeint(..., event_fn=...)`` and :func:`odegrad.odeint_event`.

How an event is found: a first solve without an autograd graph searches. After every accepted
step each event function is evaluated at the step's end; a sign change since the step's start is
narrowed by bisection on the step's dense output (no evaluations of func) to adjacent float64
times, and the earlier of the two (the last time on the starting side) is the event time. A
terminal event ends the solve there; a non-terminal one is recorded and the solve goes on. Only
sign changes between step ends are seen: two crossings inside one step cancel out (as in
torchdiffeq).

How it is differentiated: a second solve, through the chosen gradient backend, takes the same
steps (output times never shorten odeint's steps; fixed-step methods get the first solve's grid)
with the event times as extra output times, so the states y(t*) at the events carry the backend's
gradients. The implicit function theorem on g(t*, y(t*; θ); θ) = 0 gives

    dt* = −(∂g/∂y · dy(t*) + ∂g/∂θ) / ġ,    ġ = ∂g/∂t + ∂g/∂y · f(t*, y(t*)),

applied as ``t* + (δ − δ.detach())`` with ``δ = −g(t*, y(t*)) / ġ`` (ġ held constant): the value
is t*, the gradient the theorem's. The state that ends a terminal solve is
``y(t*) + (event_t − t*) · f``, so it also moves with the event time. The search costs one extra
forward solve (without a graph) and one evaluation of func per event time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ._counting import CountedFunc, check_func_output, counted
from .errors import EventNotFound, InvalidInput, MaxStepsExceeded, NonFiniteValue
from .gradients import Problem
from .solvers import AcceptedStep, Solution, TimeAxis, bad_batch_entries

BISECTIONS = 200
"""Most bisection steps per crossing (float64 times are resolved to adjacent floats well before)."""


@dataclass(frozen=True)
class Event:
    """A zero crossing of ``fn(t, y)`` to find during a solve.

    Attributes:
        fn: ``fn(t, y) -> Tensor`` of any shape, with ``y`` shaped like ``y0`` (a tuple for tuple
            states). It fires where any entry changes sign (torchdiffeq's rule: entries are
            combined as ``min(fn · sign(fn(t0, y0)))``, an entry that is zero at the start
            counting as positive, so a state that starts on the surface does not fire there).
        terminal: end the solve at the first crossing (True), or record every crossing and go on.
    """

    fn: Callable[..., Tensor]
    terminal: bool = True

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InvalidInput("Event fn", type(self.fn).__name__, "a callable fn(t, y) -> Tensor")
        if not isinstance(self.terminal, bool):
            raise InvalidInput("Event terminal", self.terminal, "True or False")


def check_events(events: Any) -> tuple[Event, ...]:
    """``solve(events=...)`` as a tuple of :class:`Event` (a list or tuple of them).

    Raises:
        InvalidInput: ``events`` is not a sequence of Event objects.
    """
    if not isinstance(events, (list, tuple)) or not all(isinstance(e, Event) for e in events):
        raise InvalidInput("events", type(events).__name__, "a list of odegrad.Event objects")
    return tuple(events)


class _Surface:
    """One event function on the flat state, its entries combined into one scalar that is ≥ 0
    at the start (see :class:`Event`)."""

    def __init__(self, fn: Callable[..., Tensor], unflatten: Callable[[Tensor], Any] | None,
                 time_dtype: torch.dtype, t0: float, y0: Tensor):
        self.fn, self.unflatten, self.time_dtype = fn, unflatten, time_dtype
        first = self.raw(t0, y0).detach()
        self.signs = torch.where(first < 0, -1.0, 1.0).to(first.dtype)

    def raw(self, t: float | Tensor, y: Tensor) -> Tensor:
        time = t if isinstance(t, Tensor) else torch.tensor(t, dtype=self.time_dtype, device=y.device)
        out = self.fn(time, y if self.unflatten is None else self.unflatten(y))
        if not isinstance(out, Tensor) or not out.is_floating_point() or out.numel() == 0:
            raise InvalidInput("event_fn output", getattr(out, "dtype", type(out).__name__),
                               "a non-empty floating-point Tensor")
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(out.detach()).all()):
            # NaN has no sign: it would read as a crossing (or hide one)
            raise NonFiniteValue("the output of event_fn", t=float(time), bad_indices=bad_batch_entries(out))
        return out

    def __call__(self, t: float | Tensor, y: Tensor) -> Tensor:
        return (self.raw(t, y) * self.signs).min()

    def sign(self, t: float, y: Tensor) -> int:
        value = float(self(t, y))
        return (value > 0) - (value < 0)


class _Search:
    """The observer of the searching solve (``IntegrationConfig.observers``): per accepted step,
    finds the crossings, records them (non-terminal ones up to the end) and returns the time the
    first terminal crossing ends the solve at. ``points`` collects the step ends (the grid a
    fixed-step method repeats)."""

    def __init__(self, surfaces: list[_Surface], terminal: list[bool], t0: float, y0: Tensor, func: CountedFunc,
                 time_dtype: torch.dtype, axis: TimeAxis):
        self.surfaces, self.terminal, self.func, self.time_dtype = surfaces, terminal, func, time_dtype
        self.axis = axis
        self.horizon = torch.finfo(time_dtype).max / 16
        self.signs = [surface.sign(t0, y0) for surface in surfaces]
        self.found: list[list[float]] = [[] for _ in surfaces]
        self.points = [t0]
        self.end: float | None = None

    def __call__(self, step: AcceptedStep) -> float | None:
        t0, t1, y1, at = step.t0, step.t1, step.y1, step.at
        if abs(t1) > self.horizon:
            raise EventNotFound(f"no terminal event fired before the time came near the largest {self.time_dtype} "
                                f"({self.horizon:.3g}; the next steps would overflow): event_fn never crosses "
                                "zero along this solution. Give t an end time (t = [t0, t_end]) or check "
                                "event_fn", t=t1, t_end=self.axis.back(math.inf), nfe=self.func.nfe)
        self.points.append(t1)
        roots = []
        for k, surface in enumerate(self.surfaces):
            before, self.signs[k] = self.signs[k], surface.sign(t1, y1)
            if before != 0 and self.signs[k] != before:
                roots.append((_bisect(surface, at, before, t0, t1), k))
        ends = self.axis.ordered(root for root, k in roots if self.terminal[k])
        self.end = ends[0] if ends else None
        for root, k in roots:
            if self.end is None or not self.axis.before(self.end, root):
                self.found[k].append(root)
        return self.end


def _bisect(surface: _Surface, at: Callable[[float], Tensor], before: int, lo: float, hi: float) -> float:
    """The last time on the starting side (sign ``before``) of the crossing in ``(lo, hi]``."""
    for _ in range(BISECTIONS):
        mid = lo + (hi - lo) / 2
        if mid in (lo, hi):
            break
        if surface.sign(mid, at(mid)) == before:
            lo = mid
        else:
            hi = mid
    return lo


def _as_time(value: float, dtype: torch.dtype, limit: float, axis: TimeAxis) -> float:
    """``value`` rounded to the dtype of t, stepped back if rounding passed ``limit`` (the end
    of the last step: the second solve must not need a step more)."""
    x = torch.tensor(value, dtype=dtype)
    if axis.before(limit, float(x)):
        x = torch.nextafter(x, torch.tensor(axis.back(-math.inf), dtype=dtype))
    return float(x)


def _implicit_time(surface: _Surface, time: Tensor, y: Tensor, f: Tensor) -> Tensor:
    """``time`` with the derivative the implicit function theorem gives (module docstring).

    Raises:
        InvalidInput: the event function's rate along the solution is zero or undefined there.
    """
    with torch.enable_grad():
        s, z = time.detach().requires_grad_(True), y.detach().requires_grad_(True)
        g = surface(s, z)
        parts = torch.autograd.grad(g, (s, z), allow_unused=True) if g.requires_grad else (None, None)
    rate = (0.0 if parts[0] is None else float(parts[0])) + (0.0 if parts[1] is None else float((parts[1] * f).sum()))
    if rate == 0.0 or not math.isfinite(rate):
        raise InvalidInput("event_fn", f"a rate d/dt fn(t, y(t)) = {rate} at t={float(time):.10g}",
                           "a function crossing zero transversally along the solution (nonzero rate)")
    delta = (-surface(time, y) / rate).to(time.dtype)
    return time + (delta - delta.detach())


def solve_events(problem: Problem, t: Tensor, events: Sequence[Event], unflatten: Callable[[Tensor], Any] | None,
                 run: Callable[[Problem, Tensor], Solution]) -> Solution:
    """Search ``problem`` for ``events`` and solve it again through ``run`` (the backend, with t
    gradients) up to the end: see the module docstring.

    Args:
        problem: the solve; ``problem.t[-1]`` may be ±inf (search until a terminal event).
        t: the user's output times (may require grad), ``problem.t`` before detaching.
        events: the events, in order.
        unflatten: the flat state as the user's state (tuple states), or None.
        run: solves a problem with output times (detached in the problem, the user's as the tensor).

    Returns:
        The second solve's Solution with ``ys`` at the output times before the end (and the
        state at a terminal event last), ``event_t`` and ``event_times``.
    """
    times = problem.t.tolist()
    axis = TimeAxis.of(times[0], times[-1])
    dtype = problem.t.dtype
    y0 = problem.y0.detach()
    with torch.no_grad():
        surfaces = [_Surface(event.fn, unflatten, dtype, times[0], y0) for event in events]
        func = counted(problem.func, dtype)  # (the loop counts in this wrapper: the search reads its nfe)
        search = _Search(surfaces, [event.terminal for event in events], times[0], y0, func, dtype, axis)
        try:
            first = problem.solver.integrate(func, y0, problem.t,
                                             replace(problem.config, observers=(search,)))
        except MaxStepsExceeded as error:
            if math.isfinite(times[-1]):
                raise
            raise EventNotFound("no terminal event fired within options['max_steps'] steps: event_fn may "
                                "never cross zero along this solution. Give t an end time (t = [t0, t_end]), "
                                "raise options['max_steps'], or check event_fn", t=error.t, t_end=error.t_end,
                                nfe=error.nfe) from None
    limit = search.points[-1]
    found = [[_as_time(root, dtype, limit, axis) for root in roots] for roots in search.found]
    end = None if search.end is None else _as_time(search.end, dtype, limit, axis)
    outputs = [times[0], *(x for x in times[1:] if math.isfinite(x) and (end is None or axis.before(x, end)))]
    run_times = axis.ordered(set(outputs).union(*found))
    user = {x: i for i, x in enumerate(times)}
    t_run = torch.stack([t[user[x]] if x in user else t.new_tensor(x) for x in run_times])
    config = problem.config if problem.solver.error_estimate else replace(
        problem.config, grid=search.points, step_size=None)
    solution = run(replace(problem, t=t_run.detach(), config=config), t_run)
    index = {x: i for i, x in enumerate(run_times)}
    slopes: dict[float, Tensor] = {}
    with torch.no_grad():
        for x in sorted(set().union(*found)):
            y = solution.ys[index[x]].detach()
            slopes[x] = check_func_output(problem.func(t_run[index[x]].detach(), y), y)
    solution.event_times = [
        torch.stack([_implicit_time(surface, t_run[index[x]], solution.ys[index[x]], slopes[x]) for x in roots])
        if roots else t.new_zeros(0) for surface, roots in zip(surfaces, found)]
    ys = solution.ys[[index[x] for x in outputs]]
    if end is not None:
        k = next(k for k, roots in enumerate(found) if events[k].terminal and roots)
        solution.event_t = solution.event_times[k][0]
        shift = (solution.event_t - t_run[index[end]]).to(ys.dtype)
        ys = torch.cat([ys, (solution.ys[index[end]] + shift * slopes[end]).unsqueeze(0)])
    solution.ys = ys
    solution.stats.nfe_forward += first.stats.nfe_forward + len(slopes)
    return solution
