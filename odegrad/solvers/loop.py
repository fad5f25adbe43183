"""The shared integration loop: drives any :class:`StepSolver` forwards or backwards in time,
with a fixed grid or an adaptive controller, emits outputs by dense interpolation (so output
times never shorten steps), and records per-step error and stiffness estimates."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InvalidInput, MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow
from .base import DenseOutput, IntegrationConfig, Solution, Stats, StepRecord, StepSolver
from .controller import PIController, initial_step


class TimedFunc:
    """Calls ``func(t, y)`` with t as a 0-dim tensor in the dtype of the user's ``t``; counts NFE.

    Solvers call it with a Python float time; ``raw`` is the user's function. The first output is
    checked against the state's shape, dtype and device.
    """

    def __init__(self, func, t_like: Tensor):
        self.raw = func
        self.dtype = t_like.dtype
        self.device = t_like.device
        self.nfe = 0
        self.checked = _tracing()

    def __call__(self, t: float, y: Tensor) -> Tensor:
        self.nfe += 1
        out = self.raw(torch.tensor(t, dtype=self.dtype, device=self.device), y)
        if not self.checked:
            check_func_output(out, y)
            self.checked = True
        return out


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()


def _bad_batch_entries(y: Tensor) -> list[int]:
    if y.dim() < 2:
        return []
    return (~torch.isfinite(y)).reshape(y.shape[0], -1).any(dim=1).nonzero().flatten().tolist()


def check_func_output(f0: Tensor, y0: Tensor) -> None:
    """func(t0, y0) must match y0 in shape, dtype and device."""
    if not isinstance(f0, Tensor):
        raise InvalidInput("func output", type(f0).__name__, "a Tensor with the shape of y0")
    for what in ("shape", "dtype", "device"):
        if getattr(f0, what) != getattr(y0, what):
            raise InvalidInput(f"func output {what}", str(getattr(f0, what)),
                               f"{getattr(y0, what)} (the {what} of y0)",
                               hint="func(t, y) must return dy/dt with the same shape, dtype and "
                                    "device as y")


def fixed_grid(times: list[float], config: IntegrationConfig) -> list[float]:
    """The step points of a fixed-step solve through output ``times``: ``config.grid``, a grid of
    ``config.step_size`` (last step shortened to end on ``times[-1]``), or ``times`` themselves."""
    direction = 1.0 if times[-1] > times[0] else -1.0
    t0, t_end = times[0], times[-1]
    if config.grid is not None:
        grid = [float(g) for g in config.grid]
        span_ok = len(grid) >= 2 and grid[0] == t0 and direction * (grid[-1] - t_end) >= 0
        monotone = all(direction * (b - a) > 0 for a, b in zip(grid, grid[1:]))
        if not (span_ok and monotone):
            raise InvalidInput("options['grid']", f"{len(grid)} times from {grid[0]} to {grid[-1]}",
                               f"strictly monotone times starting at t[0]={t0} and reaching "
                               f"t[-1]={t_end}")
        return grid
    if config.step_size is None:
        return times
    n_steps = max(1, math.ceil(abs(t_end - t0) / config.step_size - 1e-9))
    grid = [t0 + direction * config.step_size * i for i in range(n_steps)]
    grid.append(t_end)
    return grid


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
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        stiffness = (torch.stack(self.stiffness).to(torch.float64) if self.stiffness
                     else torch.full((len(self.t),), float("nan"), dtype=torch.float64))
        return StepRecord(as_tensor(self.t), as_tensor(self.h), as_tensor(self.error), stiffness)


def integrate_steps(solver: StepSolver, func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                    *, keep_dense: bool = False) -> Solution:
    """Integrate with ``solver`` and return a :class:`Solution` with ``ys: [len(t), *y0.shape]``."""
    times = [float(v) for v in t.tolist()]
    return integrate_on_times(solver, func, y0, times, config, t_like=t, keep_dense=keep_dense)


def integrate_on_times(solver: StepSolver, func, y0: Tensor, times: list[float], config: IntegrationConfig,
                       *, t_like: Tensor, keep_dense: bool = False) -> Solution:
    """:func:`integrate_steps` with the output times as Python floats (``t_like`` gives the dtype and
    device of the time func receives). Nothing here reads tensor values, so a fixed-step solve
    traces (``torch.export``, ``torch.jit.trace``) to one static graph; ``odegrad.export`` uses it."""
    if len(times) == 1:
        return Solution(ys=y0.unsqueeze(0), stats=Stats())
    direction = 1.0 if times[-1] > times[0] else -1.0
    timed = func if isinstance(func, TimedFunc) else TimedFunc(func, t_like)
    nfe_before = timed.nfe
    state = solver.init(timed, times[0], y0)
    dense = DenseOutput(solver, direction) if keep_dense else None
    recorder = _Recorder()
    stats = Stats()
    if solver.adaptive:
        ys = _adaptive_loop(solver, timed, y0, state, times, direction, config, recorder, dense, stats)
    else:
        ys = _fixed_loop(solver, timed, y0, state, times, direction, config, recorder, dense, stats)
    stats.nfe_forward = timed.nfe - nfe_before
    out = torch.stack(ys)
    if not solver.adaptive and not _tracing():
        _check_finite_outputs(out, times, stats.nfe_forward)
    return Solution(ys=out, stats=stats, steps=recorder.record(), dense=dense)


def _check_finite_outputs(ys: Tensor, times: list[float], nfe: int) -> None:
    finite = torch.isfinite(ys.detach()).reshape(ys.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise NonFiniteValue("the solution (produced by func)", t=times[first], nfe=nfe,
                             bad_indices=_bad_batch_entries(ys[first].detach()))


def _fixed_loop(solver, func, y0, state, times, direction, config, recorder, dense, stats):
    grid = fixed_grid(times, config)
    if len(grid) - 1 > config.max_steps:
        raise MaxStepsExceeded(f"the fixed grid needs {len(grid) - 1} steps but max_steps is "
                               f"{config.max_steps}", t=times[0], t_end=times[-1], nfe=func.nfe)
    ys = [y0]
    out = 1
    y = y0
    for t0, t1 in zip(grid, grid[1:]):
        h = t1 - t0
        result = solver.step(func, t0, h, y, state)
        while out < len(times) and direction * (times[out] - t1) <= 0:
            tout = times[out]
            ys.append(result.y1 if tout == t1 else solver.interpolate(result.dense_info, t0, h, tout))
            out += 1
        recorder.add(t0, h, math.nan, result.stiffness)
        if dense is not None:
            dense.append(t0, h, result.dense_info)
        y, state = result.y1, result.state
        stats.steps_accepted += 1
        if out == len(times):
            break
    return ys


def _adaptive_loop(solver, func, y0, state, times, direction, config, recorder, dense, stats):
    controller = config.controller or PIController()
    rtol, atol, norm = config.rtol, config.atol, config.norm
    t_cur, t_end = times[0], times[-1]
    if config.first_step is not None:
        h = direction * abs(config.first_step)
    else:
        h = direction * initial_step(func, t_cur, y0, state, solver.order, rtol, atol, norm)
    ys = [y0]
    out = 1
    y = y0
    previous_ratio = None
    while out < len(times):
        if stats.steps_accepted + stats.steps_rejected >= config.max_steps:
            raise MaxStepsExceeded(f"max_steps={config.max_steps} steps were not enough",
                                   t=t_cur, t_end=t_end, nfe=func.nfe)
        result = solver.step(func, t_cur, h, y, state)
        with torch.no_grad():
            scale = atol + rtol * torch.maximum(y.abs(), result.y1.abs())
            ratio = float(norm(result.error / scale))
        if not math.isfinite(ratio):
            raise NonFiniteValue("a value produced by func", t=t_cur, nfe=func.nfe,
                                 bad_indices=_bad_batch_entries(result.y1.detach()))
        accepted = ratio <= 1.0
        if accepted:
            t_next = t_cur + h
            while out < len(times) and direction * (times[out] - t_next) <= 0:
                tout = times[out]
                ys.append(result.y1 if tout == t_next
                          else solver.interpolate(result.dense_info, t_cur, h, tout))
                out += 1
            recorder.add(t_cur, h, ratio, result.stiffness)
            if dense is not None:
                dense.append(t_cur, h, result.dense_info)
            stats.steps_accepted += 1
            t_cur, y, state = t_next, result.y1, result.state
            previous_ratio = ratio
        else:
            stats.steps_rejected += 1
        h = controller.next_step(h, ratio, previous_ratio, solver.order, accepted)
        if out < len(times) and (t_cur + h == t_cur or abs(h) < 1e-300):
            raise StepSizeUnderflow(f"step size underflow: h={h:.3g} at error ratio {ratio:.3g}",
                                    t=t_cur, t_end=t_end, nfe=func.nfe)
    return ys
