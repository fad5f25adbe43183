"""The traced driver of the adaptive loop: one ``torch.while_loop`` over an explicit carry, so an
adaptive solve compiles to one graph (``torch.compile(fullgraph=True)``), differentiates through
the loop (``gradient="direct"``) and exports as an ONNX ``Loop``.

It advances the carry with the same functions as the eager driver (:mod:`._loop`): the step
solver's ``init``/``step``/``interpolate``, the controller's ``scaled_error`` and
:func:`~._controller.stepped_size`, :func:`~._controller.initial_step`,
:func:`~._controller.clip_to_stop` and :func:`~._controller.underflow`; times and step sizes are
float64 tensors where the eager driver has Python floats (both IEEE doubles: the same steps,
values equal up to rounding — a tensor step size multiplies a stage combination once where a
float one scales each term). Where the eager driver raises, this one stops with a status code
(:class:`Status`), and the outputs it did not reach are NaN; outside ``torch.compile`` the status
is turned into the eager driver's exception.

The loop body (:func:`march`) steps a batch of *entries*, each with its own time, step size,
error ratio, accept decision, status and output row (float64 tensors shaped ``[B, 1, ..., 1]``
against the state): the traced driver is a batch of one entry, the whole state; per-sample solves
(:mod:`._per_sample`) run it over the batch dimension.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .._counting import counted, is_tracing
from ..errors import MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow, UnsupportedCombination
from ._base import IntegrationConfig, Solution, Stats
from ._controller import (
    clip_to_stop,
    initial_step,
    initial_step_constants,
    norm_tensor,
    stepped_size,
    underflow,
)
from ._scalars import const, tolerance
from ._time_axis import TimeAxis

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
    controller = config.controller
    first_step = () if controller.first_step is None else (abs(controller.first_step),)
    return (*solver.constants(), *controller.constants(order), *initial_step_constants(order),
            *DRIVER_CONSTANTS, *first_step)


def traced_unsupported(solver: Any, config: IntegrationConfig, keep_dense: bool) -> list[str]:
    """What of ``solver`` and ``config`` the traced driver cannot honour (each needs a value read
    or a Python callback per step): a solver that is not ``traceable`` (implicit methods: Newton's
    iteration count depends on the values), per-step observers (event search among them),
    ``jump_t``, ``perturb`` and the dense output."""
    method = f"the method {getattr(solver, 'name', solver)!r} (its steps read tensor values)"
    observers = "per-step observers (events, local regularization, gq's nodes, interp's windows)"
    return [name for name, value in ((method, not getattr(solver, "traceable", False)),
                                     (observers, config.observers), ("jump_t", config.controller.jumps),
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
    refuse_untraceable(solver, config, keep_dense)
    counted_func = counted(func, t.dtype)
    nfe_before = counted_func.nfe
    time_dtype = t.dtype
    column = (1,) * (y0.dim() + 1)

    def field(time: Tensor, y: Tensor) -> Tensor:  # the solve as a batch of one entry
        return counted_func(time.reshape(()).to(time_dtype), y[0]).unsqueeze(0)

    def entry_norm(x: Tensor) -> Tensor:
        return norm_tensor(config.controller.norm(x[0])).reshape(column)

    marched = march(solver, field, y0.unsqueeze(0), t.detach().to(_F64).unsqueeze(0), config, entry_norm,
                    loop=_while_loop)
    status = marched.status[0]
    solution = Solution(ys=marched.ys[0], stats=Stats(), next_step=marched.h.reshape(()), status=status)
    if is_tracing():
        solution.stats.steps_accepted, solution.stats.steps_rejected = marched.accepted[0], marched.rejected[0]
        return solution
    accepted, rejected = int(marched.accepted[0]), int(marched.rejected[0])
    # the loop's body runs compiled (torch.while_loop compiles it even eagerly): its evaluations
    # are counted from the step counts
    in_loop = (accepted + rejected) * (solver.evaluations_per_step or 0)
    solution.stats = Stats(nfe_forward=counted_func.nfe - nfe_before + in_loop, steps_accepted=accepted,
                           steps_rejected=rejected)
    solution.next_step = float(marched.h.detach())
    if raise_on_failure:
        _raise_for(Status(int(status)), float(marched.t.detach()), float(t[-1]), solution.next_step,
                   solution.stats.nfe_forward, config)
    return solution


def refuse_untraceable(solver: Any, config: IntegrationConfig, keep_dense: bool, *,
                       what: str = "the traced adaptive loop",
                       remedy: str = "they need the eager driver (options={'driver': 'eager'})") -> None:
    """Raise :class:`UnsupportedCombination` naming what of ``solver`` and ``config`` only the
    eager driver does (:func:`traced_unsupported`); ``what`` cannot run them, ``remedy`` says what to do."""
    unsupported = traced_unsupported(solver, config, keep_dense)
    if unsupported:
        raise UnsupportedCombination(f"{what} cannot run with {', '.join(unsupported)}: {remedy}")


class Marched(NamedTuple):
    """Where :func:`march` left a batch of ``B`` entries: per entry its accepted and rejected
    steps, :class:`Status` and reached outputs (``Tensor[B]`` int64), its last time and proposed
    next step (float64, shaped to broadcast against the state), and the outputs
    ``ys: Tensor[B, n, *shape]`` (NaN where not reached)."""

    accepted: Tensor
    rejected: Tensor
    status: Tensor
    out: Tensor
    t: Tensor
    h: Tensor
    ys: Tensor
    totals: Any = None


def march(solver: Any, field: Callable, y0: Tensor, times: Tensor, config: IntegrationConfig,
          entry_norm: Callable[[Tensor], Tensor], *, loop: Callable, land: bool = False,
          on_output: Callable | None = None, on_step: Callable | None = None,
          accumulate: Callable | None = None, totals: Any = None) -> Marched:
    """Step ``B`` independent entries of one batched state through their own output times: each
    entry has its own time, step size, error ratio, accept decision and status (masks, no Python
    branch on a value); an entry that is done (or failed) no longer changes, stepping by zero.
    The one loop body of the traced driver (a batch of one entry) and of per-sample solves.

    Args:
        solver: an adaptive step solver; its ``step`` receives times and step sizes shaped
            ``column`` (``[B, 1, ..., 1]``, broadcasting against the state).
        field: ``field(t, y)`` with ``t`` float64 ``[B, 1, ..., 1]`` and ``y: Tensor[B, *shape]``.
        y0: ``Tensor[B, *shape]``.
        times: float64 ``Tensor[B, n]``, each row strictly monotone (its direction is the entry's).
        config: tolerances, controller, ``first_step``, ``step_t`` stops and ``max_steps``.
        entry_norm: the error norm of each entry, float64 ``[B, 1, ..., 1]``.
        loop: ``torch.while_loop`` (compiles) or :func:`python_loop` (eager) — the same body.
        land: output times are forced stops (steps land on them: backward sweeps add jumps there).
        on_output: with ``land``: ``on_output(t, y, landed, index) -> y`` after a step, where
            ``landed: Tensor[B]`` marks the entries that reached their output ``index: Tensor[B]``
            (the solver's carried state is recomputed for them).
        on_step: ``on_step(t, h, accepted, y, result)`` after each step (eager loops only): the
            per-entry start, signed step (0 for done entries), acceptance and state before the
            step, and the step's :class:`StepResult`.
        accumulate: ``accumulate(totals, t, h, accepted, y, result) -> totals`` after each step,
            with ``totals`` (a tensor or a tuple of them, not per entry) carried through the loop
            from the given initial value and returned in :attr:`Marched.totals`: what a traced
            backward sweep sums over the steps of all entries (its parameter quadrature).
    """
    batch, count = times.shape
    column = (batch,) + (1,) * (y0.dim() - 1)
    point = (batch, 1) + (1,) * (y0.dim() - 1)  # one time per entry, against the [B, n, *shape] outputs
    # closure inputs of a while loop may not alias each other: no views among them
    rows = _fresh(times.reshape(batch, count, *([1] * (y0.dim() - 1))))
    rows_axis = TimeAxis.of_rows(times, 1)  # each entry's direction, [B, 1]
    axis = TimeAxis(_fresh(rows_axis.sign.reshape(column)))
    along = _fresh(rows_axis.along(times))  # [B, n]: output times along each entry's solve
    s_end = _fresh(along[:, -1].reshape(column))
    stops = _stops(config, rows_axis)
    controller, order = config.controller, solver.order
    rtol, atol = tolerance(controller.rtol, y0), tolerance(controller.atol, y0)
    index = torch.arange(count, device=y0.device)
    max_steps = config.max_steps

    t0 = _fresh(times[:, 0].reshape(column))  # carried: may not alias the loop's closure input `times`
    state0 = solver.init(field, t0, y0)
    if loop is _while_loop:
        y0 = _differentiable(y0, state0)
    if controller.first_step is not None:
        h0 = torch.ones_like(t0) * const(abs(controller.first_step))
    else:
        h0 = initial_step(field, t0, y0, state0, order, rtol, atol, entry_norm, axis)
    spare = 0 if land or loop is not python_loop else 1  # a slot past the outputs for the eager emit's window
    nans = torch.full_like(y0, math.nan).unsqueeze(1).expand(batch, count - 1 + spare, *y0.shape[1:])
    ys0 = torch.cat([y0.unsqueeze(1), nans], dim=1)
    zero = torch.zeros(batch, dtype=torch.int64, device=y0.device)

    def active(accepted, rejected, status, out):
        return (out < count) & (status == Status.SUCCESS.value) & (accepted + rejected < max_steps)

    def running(accepted, rejected, status, out, s, h, previous, y, state, ys, *sums):
        return active(accepted, rejected, status, out).any()

    def body(accepted, rejected, status, out, s, h, previous, y, state, ys, *sums):
        # s, h: each entry's time and next step size along its solve; the solver and the hooks get t
        stepping = active(accepted, rejected, status, out).reshape(column)
        ahead = torch.where(stops > s.reshape(batch, 1), stops, stops[:, -1:])
        if land:
            ahead = torch.minimum(ahead, along.gather(1, out.clamp(max=count - 1)[:, None]))
        s1, step = clip_to_stop(s, h, ahead.min(dim=1).values.reshape(column))
        step = torch.where(stepping, step, torch.zeros_like(step))  # done entries stay where they are
        t, signed = axis.back(s), axis.back(step)
        result = solver.step(field, t, signed, y, state)
        ratio = controller.scaled_error(y, result.y1, result.error, rtol, atol, entry_norm).detach()
        ok = stepping & (ratio <= const(1.0))
        if on_step is not None:
            on_step(t, signed, ok, y, result)
        if accumulate is not None:
            sums = (accumulate(sums[0], t, signed, ok, y, result),)
        reached = ok.reshape(batch, 1) & (index >= out[:, None]) & (along <= s1.reshape(batch, 1))
        ys = emit(ys, reached, out, t, axis.back(s1), axis.back(torch.where(stepping, step, torch.ones_like(step))),
                  result)
        previous = torch.where(ok, ratio, previous)
        h_next = torch.where(stepping, stepped_size(controller, step, h, ratio, previous, order, ok), h)
        s_next = torch.where(ok, s1, s)
        bad = stepping & ~torch.isfinite(ratio)
        stuck = stepping & underflow(s_next, h_next, s_end)
        status = torch.where(bad.reshape(batch), Status.NON_FINITE.value,
                             torch.where(stuck.reshape(batch), Status.UNDERFLOW.value, status))
        y_next = torch.where(ok, result.y1, y)
        state_next = pytree.tree_map(lambda new, old: torch.where(ok, new, old), result.state, state)
        out_next = out + reached.to(torch.int64).sum(dim=1)
        if on_output is not None:
            landed = reached.any(dim=1)
            t_next = axis.back(s_next)
            y_next = on_output(t_next, y_next, landed, out_next - 1)
            state_next = _refreshed(solver, field, t_next, y_next, state_next, landed.reshape(column),
                                    traced=loop is not python_loop)
        taken, refused = ok.reshape(batch).to(torch.int64), (stepping & ~ok).reshape(batch).to(torch.int64)
        return (accepted + taken, rejected + refused, status, out_next, s_next, h_next, previous, y_next,
                state_next, ys, *sums)

    def emit(ys, reached, out, t, t1, readable, result):
        """``ys`` with the outputs the step reached filled in: its end where an output time is the
        end (every one when ``land``), else its dense output (``readable``: the step, 1 for done
        entries, which reach nothing: no 0/0). Eagerly only the outputs up to the furthest any entry
        reached are read (one value read); a traced loop reads every output time of every step."""
        if land:
            return torch.where(reached.reshape(rows.shape), result.y1.unsqueeze(1), ys)
        dense = pytree.tree_map(lambda x: x.unsqueeze(1), result.dense_info)
        end = t1.reshape(point)
        if loop is not python_loop:
            # an output not reached is read at the step's end: far outside the step its dense
            # output can overflow, and the gradient of an unused inf is NaN (0 · inf)
            at_times = torch.where(reached.reshape(rows.shape), rows, end)
            at = torch.where(at_times == end, result.y1.unsqueeze(1),
                             solver.interpolate(dense, t.reshape(point), readable.reshape(point), at_times))
            return torch.where(reached.reshape(rows.shape), at, ys)
        width = int(reached.sum(dim=1).max())
        if width == 0:
            return ys
        # the outputs out .. out + width − 1 of each entry; positions past its last output all go to
        # one spare slot (index count, never returned), so no output is written twice (scatter's
        # gradient would count it twice)
        window = (out[:, None] + torch.arange(width, device=out.device)).clamp(max=count)  # [B, width]
        fresh = (reached.gather(1, window.clamp(max=count - 1)) & (window < count)).reshape(batch, width, *point[2:])
        at_times = torch.where(fresh, times.gather(1, window.clamp(max=count - 1)).reshape(fresh.shape), end)
        at = torch.where(at_times == end, result.y1.unsqueeze(1),
                         solver.interpolate(dense, t.reshape(point), readable.reshape(point), at_times))
        slots = window.reshape(fresh.shape).expand_as(at)
        return ys.scatter(1, slots, torch.where(fresh, at, ys.gather(1, slots)))

    carry = (zero, zero.clone(), zero.clone(), torch.ones_like(zero), axis.along(t0), h0, torch.zeros_like(t0), y0,
             state0, ys0, *(() if accumulate is None else (totals,)))
    accepted, rejected, status, out, s_last, h_last, _, _, _, ys, *sums = loop(running, body, carry)
    ys = ys[:, :count]
    status = torch.where((status == Status.SUCCESS.value) & (out < count), Status.MAX_STEPS.value, status)
    return Marched(accepted, rejected, status, out, axis.back(s_last), axis.back(h_last), ys, sums[0] if sums else None)


def _refreshed(solver: Any, field: Callable, t: Tensor, y: Tensor, state: Any, landed: Tensor, *,
               traced: bool) -> Any:
    """The solver's carried state (e.g. the FSAL derivative) recomputed for the entries whose y an
    ``on_output`` hook changed (``landed``): in a Python loop only in a step where one did (a
    value read); in a traced loop in every step, masked. (``torch.cond`` would skip the evaluation
    in the other steps, but inductor (torch 2.13) miscompiles it inside the loop body: the traced
    interp sweep of the spiral benchmark then took 3515 evaluations instead of 72.)"""
    if not traced and not bool(landed.any()):
        return state
    return pytree.tree_map(lambda fresh, old: torch.where(landed, fresh, old), solver.init(field, t, y), state)


def _fresh(x: Tensor) -> Tensor:
    """A contiguous copy of ``x``: a while loop's inputs may not alias each other, and a carry
    must keep the strides the body gives it."""
    return x.clone(memory_format=torch.contiguous_format)


def python_loop(running: Callable, body: Callable, carry: tuple) -> tuple:
    """``torch.while_loop``'s semantics as a Python loop (one value read per iteration): the eager
    runner of :func:`march`'s body, differentiable by ordinary autograd."""
    while bool(running(*carry)):
        carry = body(*carry)
    return carry


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


def _stops(config: IntegrationConfig, axis: TimeAxis) -> Tensor:
    """The forced stops (``step_t``) along each entry's solve (``axis.sign: [B, 1]``), then +inf,
    ``Tensor[B, k + 1]``: an entry's next stop after ``s`` is its smallest stop above ``s``."""
    stops = axis.sign.new_tensor(config.controller.stops).reshape(1, -1)
    return torch.cat([axis.along(stops), torch.full_like(axis.sign, math.inf)], dim=1)


def _raise_for(status: Status, t: float, t_end: float, h: float, nfe: int, config: IntegrationConfig,
               entry: str = "") -> None:
    """The eager driver's exception for a traced solve that ended with ``status`` (``entry``:
    which batch entry, for per-sample solves)."""
    if status == Status.MAX_STEPS:
        raise MaxStepsExceeded(f"max_steps={config.max_steps} steps were not enough{entry}", t=t, t_end=t_end, nfe=nfe)
    if status == Status.NON_FINITE:
        # the non-finite step was rejected, not carried: which entries went bad is not known here
        raise NonFiniteValue(f"a value produced by func{entry}", t=t, nfe=nfe)
    if status == Status.UNDERFLOW:
        raise StepSizeUnderflow(f"step size underflow: h={h:.3g}{entry}", t=t, t_end=t_end, nfe=nfe)
