"""The traced driver of the adaptive loop: one ``torch.while_loop`` over an explicit carry, so an
adaptive solve compiles to one graph (``torch.compile(fullgraph=True)``), differentiates through
the loop (``gradient="direct"``) and exports as an ONNX ``Loop``.

It advances the carry with the same functions as the eager driver (:mod:`._loop`): the step
solver's ``init``/``step``/``interpolate``, the controller's ``scaled_error`` and
:func:`~._controller.stepped_size`, :func:`~._controller.initial_step`,
:func:`~._controller.clip_to_stop` and :func:`~._controller.underflow`; times and step sizes are
0-dim float64 tensors where the eager driver has Python floats (both are IEEE doubles: the same
arithmetic, the same steps). Where the eager driver raises, this one stops with a status code
(:class:`Status`), and the outputs it did not reach are NaN; outside ``torch.compile`` the status
is turned into the eager driver's exception.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .._counting import counted, is_tracing
from ..errors import MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow, UnsupportedCombination
from ._base import IntegrationConfig, Solution, Stats
from ._controller import (
    clip_to_stop,
    controller_of,
    initial_step,
    initial_step_constants,
    norm_tensor,
    stepped_size,
    underflow,
)
from ._scalars import const, tolerance

_F64 = torch.float64


class Status(enum.IntEnum):
    """How a traced solve ended (``Solution.status``)."""

    SUCCESS = 0
    MAX_STEPS = 1
    NON_FINITE = 2
    UNDERFLOW = 3


DRIVER_CONSTANTS = (1.0, 1e-300)
"""The float constants of the traced loop itself (the acceptance bound, the underflow floor)."""


def traced_constants(solver: Any, config: IntegrationConfig) -> tuple[float, ...]:
    """Every float constant a traced solve by ``solver`` under ``config`` uses: what
    :func:`~odegrad.solvers._scalars.exact_constants` needs for an exact ONNX export."""
    order = solver.order
    first_step = () if config.first_step is None else (abs(config.first_step),)
    return (*solver.constants(), *controller_of(config).constants(order), *initial_step_constants(order),
            *DRIVER_CONSTANTS, *first_step)


def traced_unsupported(solver: Any, config: IntegrationConfig, keep_dense: bool) -> list[str]:
    """What of ``solver`` and ``config`` the traced driver cannot honour (each needs a value read
    or a Python callback per step): a solver that is not ``traceable`` (implicit methods: Newton's
    iteration count depends on the values), per-step observers (event search among them),
    ``jump_t``, ``perturb`` and the dense output."""
    method = f"the method {getattr(solver, 'name', solver)!r} (its steps read tensor values)"
    observers = "per-step observers (events, local regularization, gq's nodes, interp's windows)"
    return [name for name, value in ((method, not getattr(solver, "traceable", False)),
                                     (observers, config.observers), ("jump_t", config.jumps),
                                     ("perturb", config.perturb), ("dense=True", keep_dense)) if value]


def integrate_traced(solver: Any, func: Callable, y0: Tensor, t: Tensor, config: IntegrationConfig,
                     *, keep_dense: bool = False, raise_on_failure: bool = True) -> Solution:
    """Solve adaptively through the times ``t`` with one ``torch.while_loop``.

    Args:
        solver: an adaptive :class:`~odegrad.solvers.StepSolver` (``error_estimate``).
        func: ``func(t, y)``; receives ``t`` in ``t``'s dtype.
        y0: initial state ``Tensor[*shape]``.
        t: strictly monotone output times ``Tensor[n]`` (their values are not read).
        config: tolerances, norm, controller, ``first_step``, ``step_t`` stops and ``max_steps``.
        keep_dense: refused (the dense output is kept by the eager driver).
        raise_on_failure: outside ``torch.compile``, raise the eager driver's exception for a
            failed solve instead of returning NaN outputs and the status.

    Returns:
        Solution with ``ys: Tensor[n, *shape]``, ``status`` (0-dim int64, a :class:`Status`),
        ``stats.steps_accepted``/``steps_rejected`` (ints outside ``torch.compile``, 0-dim int64
        tensors inside), ``next_step`` and no per-step records.

    Raises:
        UnsupportedCombination: ``config`` asks for something only the eager driver does.
        MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow: as the eager driver (outside
            ``torch.compile`` and with ``raise_on_failure``).
    """
    unsupported = traced_unsupported(solver, config, keep_dense)
    if unsupported:
        raise UnsupportedCombination(f"the traced adaptive loop cannot run with {', '.join(unsupported)}: "
                                     "they need the eager driver (options={'driver': 'eager'})")
    counted_func = counted(func, t.dtype)
    nfe_before = counted_func.nfe
    time_dtype = t.dtype

    def field(time: Tensor, y: Tensor) -> Tensor:
        return counted_func(time.to(time_dtype), y)

    times = t.detach().to(_F64)
    count = times.shape[0]
    direction = torch.sign(times[-1] - times[0])
    t_end = times[-1].clone()  # closure inputs of the loop may not alias each other
    stop_keys = _stop_keys(config, times, direction)
    controller, order = controller_of(config), solver.order
    rtol, atol = tolerance(config.rtol, y0), tolerance(config.atol, y0)
    index = torch.arange(count, device=y0.device)
    column = (count, *([1] * y0.dim()))
    max_steps = config.max_steps

    t0 = times[0].clone()  # carried: may not alias the loop's closure input `times`
    state0 = solver.init(field, t0, y0)
    y0 = _differentiable(y0, state0)
    if config.first_step is not None:
        h0 = direction * const(abs(config.first_step))
    else:
        h0 = direction * initial_step(field, t0, y0, state0, order, rtol, atol, config.norm)
    ys0 = torch.cat([y0.unsqueeze(0), torch.full_like(y0, math.nan).unsqueeze(0).expand(count - 1, *y0.shape)])
    zero = torch.zeros((), dtype=torch.int64, device=y0.device)

    def running(accepted, rejected, status, out, t, h, previous, y, state, ys):
        return (out < count) & (status == Status.SUCCESS.value) & (accepted + rejected < max_steps)

    def body(accepted, rejected, status, out, t, h, previous, y, state, ys):
        stop = direction * torch.where(stop_keys > direction * t, stop_keys, stop_keys[-1]).min()
        t1, step = clip_to_stop(t, h, stop, direction)
        result = solver.step(field, t, step, y, state)
        ratio = norm_tensor(controller.scaled_error(y, result.y1, result.error, rtol, atol, config.norm)).detach()
        ok = ratio <= const(1.0)
        reached = ok & (index >= out) & (direction * (times - t1) <= 0)
        at = torch.where((times == t1).reshape(column), result.y1.unsqueeze(0),
                         solver.interpolate(result.dense_info, t, step, times))
        previous = torch.where(ok, ratio, previous)
        h_next = stepped_size(controller, step, h, ratio, previous, order, ok, direction)
        t_next = torch.where(ok, t1, t)
        status = torch.where(~torch.isfinite(ratio), Status.NON_FINITE.value,
                             torch.where(underflow(t_next, h_next, t_end, direction), Status.UNDERFLOW.value, status))
        state_next = pytree.tree_map(lambda new, old: torch.where(ok, new, old), result.state, state)
        return (accepted + ok.to(torch.int64), rejected + (~ok).to(torch.int64), status,
                out + reached.to(torch.int64).sum(), t_next, h_next, previous, torch.where(ok, result.y1, y),
                state_next, torch.where(reached.reshape(column), at, ys))

    carry = (zero, zero.clone(), zero.clone(), torch.ones_like(zero), t0, h0, torch.zeros_like(t0), y0, state0, ys0)
    accepted, rejected, status, out, t_last, h_last, _, _, _, ys = _while_loop(running, body, carry)
    status = torch.where((status == Status.SUCCESS.value) & (out < count), Status.MAX_STEPS.value, status)
    solution = Solution(ys=ys, stats=Stats(), next_step=h_last, status=status)
    if is_tracing():
        solution.stats.steps_accepted, solution.stats.steps_rejected = accepted, rejected
        return solution
    steps = int(accepted) + int(rejected)
    # the loop's body runs compiled (torch.while_loop compiles it even eagerly): its evaluations
    # are counted from the step counts
    in_loop = steps * (solver.evaluations_per_step or 0)
    solution.stats = Stats(nfe_forward=counted_func.nfe - nfe_before + in_loop, steps_accepted=int(accepted),
                           steps_rejected=int(rejected))
    solution.next_step = float(h_last.detach())
    if raise_on_failure:
        _raise_for(Status(int(status)), ys, float(t_last.detach()), float(t_end), solution.next_step,
                   solution.stats, config)
    return solution


def _while_loop(running: Callable, body: Callable, carry: tuple) -> tuple:
    """``torch.while_loop(running, body, carry)``; outside ``torch.compile`` a func that torch
    cannot trace into the loop's body is refused by name (under ``torch.compile`` torch raises
    while it traces the caller)."""
    if is_tracing():
        return torch.while_loop(running, body, carry)
    try:
        return torch.while_loop(running, body, carry)
    except torch._dynamo.exc.UncapturedHigherOrderOpError as error:
        reason = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise UnsupportedCombination(
            f"func cannot run inside the traced loop (torch.while_loop): {reason}. A known torch limitation: "
            "a parameter read as .T more than once per step (write .t() or use torch.nn.functional.linear); "
            "otherwise use options={'driver': 'eager'}") from error


def _differentiable(y0: Tensor, state0: Any) -> Tensor:
    """``y0``, tied to the autograd graph of the solver's initial state when that requires grad
    (func has trainable parameters) and ``y0`` does not: ``torch.while_loop``'s autograd gives no
    gradient through a carry whose initial value does not require grad, although later
    iterations make it depend on the parameters (torch 2.13; the tie adds a zero gradient)."""
    anchor = next((leaf for leaf in pytree.tree_leaves(state0)
                   if isinstance(leaf, Tensor) and leaf.requires_grad and leaf.numel()), None)
    if anchor is None or y0.requires_grad:
        return y0
    never = torch.zeros((), dtype=torch.bool, device=y0.device)
    return torch.where(never, anchor.reshape(-1)[0].to(y0.dtype), y0)


def _stop_keys(config: IntegrationConfig, times: Tensor, direction: Tensor) -> Tensor:
    """The forced stops (``step_t``) as keys ``direction · stop``, then +inf: the next stop after
    ``t`` is ``direction`` times the smallest key above ``direction · t`` (±inf: none)."""
    values = times.new_tensor([*config.stops, math.inf])
    return torch.cat([direction * values[:-1], values[-1:]])


def _raise_for(status: Status, ys: Tensor, t: float, t_end: float, h: float, stats: Stats,
               config: IntegrationConfig) -> None:
    """The eager driver's exception for a traced solve that ended with ``status``."""
    nfe = stats.nfe_forward
    if status == Status.MAX_STEPS:
        raise MaxStepsExceeded(f"max_steps={config.max_steps} steps were not enough", t=t, t_end=t_end, nfe=nfe)
    if status == Status.NON_FINITE:
        # the non-finite step was rejected, not carried: which entries went bad is not known here
        raise NonFiniteValue("a value produced by func", t=t, nfe=nfe)
    if status == Status.UNDERFLOW:
        raise StepSizeUnderflow(f"step size underflow: h={h:.3g}", t=t, t_end=t_end, nfe=nfe)
