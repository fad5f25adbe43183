"""The shared integration loop: a short driver of a one-step solver and a stepping controller,
forwards or backwards in time. Output times are emitted by dense interpolation (they never
shorten steps), and per-step error and stiffness estimates are recorded."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import bad_batch_entries
from .._counting import counted, is_tracing
from ..errors import MaxStepsExceeded, NonFiniteValue
from ._base import DenseOutput, IntegrationConfig, Solution, Stats, StepRecord
from ._controller import AdaptiveStepping, FixedStepping


class _Recorder:
    def __init__(self):
        self.t: list[float] = []
        self.h: list[float] = []
        self.error: list[float] = []
        self.stiffness: list[Tensor] = []

    def add(self, t: float, h: float, error: float, stiffness: Tensor | None) -> None:
        self.t.append(t)
        self.h.append(h)
        self.error.append(error)
        if stiffness is not None:
            self.stiffness.append(stiffness)

    def record(self) -> StepRecord:
        def as_tensor(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float64)

        stiffness = (torch.stack(self.stiffness).to(torch.float64) if self.stiffness
                     else torch.full((len(self.t),), float("nan"), dtype=torch.float64))
        return StepRecord(as_tensor(self.t), as_tensor(self.h), as_tensor(self.error), stiffness)


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
    func = counted(func, time_dtype)
    nfe_before = func.nfe
    direction = 1.0 if times[-1] > times[0] else -1.0
    stepping = (AdaptiveStepping(solver.order, times, config) if solver.error_estimate
                else FixedStepping(times, config))
    state = solver.init(func, times[0], y0)
    stepping.start(func, y0, state)
    dense = DenseOutput(solver, direction) if keep_dense else None
    recorder, stats = _Recorder(), Stats()
    ys, out, y = [y0], 1, y0
    while out < len(times):
        if stats.steps_accepted + stats.steps_rejected >= config.max_steps:
            raise MaxStepsExceeded(f"max_steps={config.max_steps} steps were not enough",
                                   t=stepping.t, t_end=times[-1], nfe=func.nfe)
        t0, t1, h = stepping.propose()
        result = solver.step(func, t0, h, y, state)
        if not stepping.judge(y, result, t0, t1, h, func.nfe):
            stats.steps_rejected += 1
            continue
        while out < len(times) and direction * (times[out] - t1) <= 0:
            tout = times[out]
            ys.append(result.y1 if tout == t1 else solver.interpolate(result.dense_info, t0, h, tout))
            out += 1
        recorder.add(t0, h, stepping.ratio, result.stiffness)
        if config.observer is not None:
            config.observer(t0, t1, h, y.detach(), result.y1.detach(), stepping.next_step)
        if dense is not None:
            dense.append(t0, h, result.dense_info)
        stats.steps_accepted += 1
        y, state = result.y1, result.state
        if stepping.jumped:
            state = solver.init(func, t1, y)
    stats.nfe_forward = func.nfe - nfe_before
    out_ys = torch.stack(ys)
    if not solver.error_estimate and not is_tracing():
        _check_finite_outputs(out_ys, times, stats.nfe_forward)
    return Solution(ys=out_ys, stats=stats, steps=recorder.record(), dense=dense,
                    next_step=stepping.next_step)


def _check_finite_outputs(ys: Tensor, times: list[float], nfe: int) -> None:
    finite = torch.isfinite(ys.detach()).reshape(ys.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise NonFiniteValue("the solution (produced by func)", t=times[first], nfe=nfe,
                             bad_indices=bad_batch_entries(ys[first].detach()))


