"""The shared integration loop: a short driver of a one-step solver and a stepping controller,
forwards or backwards in time. Output times are emitted by dense interpolation (they never
shorten steps), and per-step error (and, when the config asks, stiffness) estimates are recorded."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .._checks import bad_batch_entries
from .._counting import CountedFunc, counted, is_tracing
from ..errors import MaxStepsExceeded, NonFiniteValue
from ._base import (
    AcceptedStep,
    DenseOutput,
    IntegrationConfig,
    Solution,
    Stats,
    StepRecord,
    StepResult,
    step_interpolation,
)
from ._controller import AdaptiveStepping, FixedStepping
from ._time_axis import TimeAxis


class _Recorder:
    def __init__(self):
        self.t: list[float] = []
        self.h: list[float] = []
        self.error: list[float] = []
        self.stiffness: list[Tensor] = []

    def add(self, t: float, h: float, error: float, stiffness: Callable[[], Tensor] | None) -> None:
        self.t.append(t)
        self.h.append(h)
        self.error.append(error)
        if stiffness is not None:
            with torch.no_grad():
                self.stiffness.append(stiffness())

    def record(self) -> StepRecord:
        def as_tensor(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float64)

        stiffness = (torch.stack(self.stiffness).to(torch.float64) if self.stiffness
                     else torch.full((len(self.t),), float("nan"), dtype=torch.float64))
        return StepRecord(as_tensor(self.t), as_tensor(self.h), as_tensor(self.error), stiffness)


class _OneSided:
    """func evaluated one-sidedly at discontinuities, as torchdiffeq's ``Perturb``: a stage at the
    start of the current step that is a discontinuity is evaluated one representable time after
    it, a stage at its end one before it (in the direction of the solve), so a func that jumps
    there is seen from inside the step. Discontinuities: ``points``, or every step end (None).

    Args:
        func: the counted func (builds the time tensor of a float time).
        axis: the direction of the solve.
        points: the discontinuity times (None: every step start and end).
    """

    _SAME = 1e-12  # |t - end| / |h| below which a stage time is the step's end (t0 + c·h rounds)

    def __init__(self, func: CountedFunc, axis: TimeAxis, points: frozenset[float] | None):
        self.func = func
        self.forwards = axis.back(1.0)  # one unit along the solve, in t
        self.points = points
        self.start, self.end = math.nan, math.nan

    def step(self, t0: float, t1: float) -> None:
        """Enter the step ``[t0, t1]`` (``t1 = nan``: only ``t0`` is known, e.g. before init)."""
        self.start, self.end = t0, t1

    def _marked(self, t: float) -> bool:
        return self.points is None or t in self.points

    def __call__(self, t: float | Tensor, y: Tensor) -> Tensor:
        """``func(t, y)``, with t moved inside the step when it is a marked step end."""
        if isinstance(t, (int, float)):
            width = abs(self.end - self.start) if math.isfinite(self.end) else 0.0
            if t == self.start and self._marked(self.start):
                return self._nudged(self.start, self.forwards, y)
            if math.isfinite(self.end) and abs(t - self.end) <= self._SAME * width and self._marked(self.end):
                return self._nudged(self.end, -self.forwards, y)
        return self.func(t, y)

    def _nudged(self, t: float, towards: float, y: Tensor) -> Tensor:
        time = self.func.time(t, y)
        return self.func(torch.nextafter(time, time + towards), y)


def integrate_steps(solver: Any, func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                    *, keep_dense: bool = False) -> Solution:
    """Integrate with the step solver ``solver``; ``ys: [len(t), *y0.shape]``."""
    times = [float(v) for v in t.tolist()]
    return integrate_on_times(solver, func, y0, times, config, time_dtype=t.dtype, keep_dense=keep_dense)


def integrate_on_times(solver: Any, func, y0: Tensor, times: list[float], config: IntegrationConfig,
                       *, time_dtype: torch.dtype | None = None, keep_dense: bool = False) -> Solution:
    """Integrate with the step solver ``solver`` through the output ``times`` (Python floats);
    ``Solution.ys: Tensor[len(times), *y0.shape]``. Nothing here reads tensor values for
    fixed-step methods, so such a solve traces (``torch.export``, ``torch.jit.trace``) to one
    static graph.

    Args:
        solver: a :class:`StepSolver` (``init``/``step``/``interpolate``, ``order``, ``error_estimate``).
        func: ``func(t, y)``; wrapped in a :class:`CountedFunc` unless it is one.
        y0: initial state.
        times: strictly monotone output times, ``times[0]`` the start.
        config: tolerances, step options and ``max_steps``.
        time_dtype: dtype of the time tensor func receives (None: y0's dtype).
        keep_dense: also return the dense output (``Solution.dense``).

    Raises:
        MaxStepsExceeded: ``config.max_steps`` steps did not reach ``times[-1]``.
        StepSizeUnderflow: the adaptive step size stopped making progress.
        NonFiniteValue: func produced NaN/Inf (the time and NFE are in the error).
    """
    if len(times) == 1:
        return Solution(ys=y0.unsqueeze(0), stats=Stats())
    counted_func = counted(func, time_dtype)
    costs = getattr(solver, "cost_snapshot", dict)  # implicit methods' Jacobian/LU/Newton counters
    nfe_before, costs_before = counted_func.nfe, costs()
    stepping = (AdaptiveStepping(solver.order, times, config) if solver.error_estimate
                else FixedStepping(times, config))
    axis = stepping.axis
    one_sided = None
    jumps = config.controller.jumps
    if config.perturb or jumps:
        one_sided = _OneSided(counted_func, axis, None if config.perturb else frozenset(jumps))
        one_sided.step(times[0], math.nan)
    func = one_sided or counted_func
    state = solver.init(func, times[0], y0)
    stepping.start(func, y0, state)
    interpolation = step_interpolation(solver, config.interp)
    dense = DenseOutput(interpolation, axis) if keep_dense else None
    recorder, stats = _Recorder(), Stats()
    ys, out, y = [y0], 1, y0
    while out < len(times):
        if stats.steps_accepted + stats.steps_rejected >= config.max_steps:
            raise MaxStepsExceeded(f"max_steps={config.max_steps} steps were not enough",
                                   t=stepping.t, t_end=times[-1], nfe=counted_func.nfe)
        t0, t1, h = stepping.propose()
        if one_sided is not None:
            one_sided.step(t0, t1)
        result = solver.step(func, t0, h, y, state)
        if not stepping.judge(y, result, t0, t1, h, counted_func.nfe):
            stats.steps_rejected += 1
            continue
        at = partial(_state_at, interpolation, result, t0, h, t1)
        step = AcceptedStep(t0, t1, h, y, result.y1, at, stepping.next_step)
        stop = _first_stop(axis, [observer(step) for observer in config.observers])
        while out < len(times) and _is_output(axis, times[out], t1, stop):
            ys.append(at(times[out]))
            out += 1
        recorder.add(t0, h, stepping.ratio, result.stiffness if config.record_stiffness else None)
        if dense is not None:
            dense.append(t0, h, result.dense_info)
        stats.steps_accepted += 1
        if stop is not None:
            ys.append(at(stop))
            break
        y, state = result.y1, result.state
        if (stepping.jumped or config.perturb) and out < len(times):
            one_sided.step(t1, math.nan)
            state = solver.init(func, t1, y)
    stats.nfe_forward = counted_func.nfe - nfe_before
    for name, count in costs().items():
        setattr(stats, name, count - costs_before[name])
    out_ys = torch.stack(ys)
    if not solver.error_estimate and not is_tracing():
        _check_finite_outputs(out_ys, times, stats.nfe_forward)
    return Solution(ys=out_ys, stats=stats, steps=recorder.record(), dense=dense,
                    next_step=stepping.next_step)


def unroll(solver: Any, func: Callable, y0: Tensor, times: list[float], config: IntegrationConfig,
           time_dtype: torch.dtype | None = None) -> Tensor:
    """States at the Python-float output ``times``, ``Tensor[len(times), *y0.shape]``, by the
    shared loop. For a fixed-step solver nothing reads tensor values, so the solve traces
    (``torch.export``, ``torch.jit.trace``, ``torch.compile``, ONNX) to one static graph;
    ``odegrad.export`` and fixed-step :class:`~odegrad.models.NeuralODE` blocks use it."""
    return integrate_on_times(solver, func, y0, times, replace(config, record_stiffness=False),
                              time_dtype=time_dtype).ys


def _state_at(interpolation: Any, result: StepResult, t0: float, h: float, t1: float, t: float) -> Tensor:
    """The accepted step ``result`` from ``t0`` to ``t1`` read at ``t``: its end state at ``t1``."""
    return result.y1 if t == t1 else interpolation.interpolate(result.dense_info, t0, h, t)


def _first_stop(axis: TimeAxis, stops: list[float | None]) -> float | None:
    """The earliest (in solve order) of the stop times observers returned, if any."""
    times = axis.ordered(stop for stop in stops if stop is not None)
    return times[0] if times else None


def _is_output(axis: TimeAxis, t: float, t1: float, stop: float | None) -> bool:
    """Whether output time ``t`` is reached by a step ending at ``t1``: up to ``t1``, or strictly
    before ``stop`` when an event ends the solve there."""
    return not axis.before(t1, t) if stop is None else axis.before(t, stop)


def _check_finite_outputs(ys: Tensor, times: list[float], nfe: int) -> None:
    finite = torch.isfinite(ys.detach()).reshape(ys.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise NonFiniteValue("the solution (produced by func)", t=times[first], nfe=nfe,
                             bad_indices=bad_batch_entries(ys[first].detach()))


