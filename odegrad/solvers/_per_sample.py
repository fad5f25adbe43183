"""Per-sample solves: the first dimension of the state indexes independent problems, each with its
own output times, time, step size, error norm and accept decision (torchode's model). One batched
evaluation of func serves every entry still running; an entry that is done steps by zero and no
longer changes. So an entry's solution does not depend on the batch it is solved in — unlike a
shared-step solve, whose one step size follows the batch's joint error norm.

The loop body is the traced driver's (:func:`~._traced.march`): a Python loop runs it eagerly
(one value read per step, ordinary autograd), ``torch.while_loop`` under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._counting import counted, is_tracing
from ..errors import InvalidInput
from ._base import IntegrationConfig, Solution, Stats
from ._controller import Norm, rms_norm
from ._traced import Status, _raise_for, _while_loop, march, python_loop, refuse_untraceable

_F64 = torch.float64


def solves_per_sample(solver: Any) -> bool:
    """Whether ``solver`` can run a per-sample solve: an adaptive step solver whose steps read no
    tensor value (odegrad's explicit Runge–Kutta methods)."""
    return bool(getattr(solver, "error_estimate", False) and getattr(solver, "traceable", False)
                and hasattr(solver, "interpolate"))


def entry_norm(norm: Norm, y: Tensor) -> Callable[[Tensor], Tensor]:
    """``norm`` applied to each batch entry of states like ``y: Tensor[B, *shape]``, as float64
    ``[B, 1, ..., 1]`` (broadcasting against the state): the RMS of each entry for the default
    norm, ``torch.func.vmap(norm)`` for any other."""
    batch = y.shape[0]
    column = (batch,) + (1,) * (y.dim() - 1)
    if norm is rms_norm:
        return lambda x: x.reshape(batch, -1).pow(2).mean(dim=1).sqrt().to(_F64).reshape(column)
    per_entry = torch.func.vmap(norm)

    def measure(x: Tensor) -> Tensor:
        try:
            return per_entry(x).to(_F64).reshape(column)
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
            raise InvalidInput("options['norm']", f"a norm torch.func.vmap cannot apply to each batch entry ({error})",
                               "a norm made of tensor operations (no .item(), float() or data-dependent "
                               "branches): per-sample mode applies it to every entry at once") from None

    return measure


def integrate_per_sample(solver: Any, func: Callable, y0: Tensor, t: Tensor, config: IntegrationConfig, *,
                         land: bool = False, on_output: Callable | None = None,
                         on_step: Callable | None = None) -> Solution:
    """Solve ``B`` independent problems through their own output times.

    Args:
        solver: an adaptive, traceable step solver (explicit Runge–Kutta).
        func: ``func(t, y)`` with ``t: Tensor[B]`` (each entry's own time, in ``t``'s dtype) and
            ``y: Tensor[B, *shape]``.
        y0: ``Tensor[B, *shape]``.
        t: ``Tensor[B, n]``, each row strictly monotone (rows may differ, reverse time included).
        config: tolerances, norm (applied per entry), controller, ``first_step``, ``step_t`` and
            ``max_steps`` (per entry).
        land, on_output, on_step: see :func:`~._traced.march` (backward sweeps of adjoint backends).

    Returns:
        Solution with ``ys: Tensor[B, n, *shape]``, ``status: Tensor[B]``, ``next_step:
        Tensor[B]`` and ``stats.steps_accepted``/``steps_rejected`` as ``Tensor[B]`` (int64);
        ``stats.nfe_forward`` counts batched evaluations of func.

    Raises:
        MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow: an entry failed (outside
            ``torch.compile``; the message names the first such entry).
    """
    return sweep_per_sample(solver, func, y0, t, config, land=land, on_output=on_output, on_step=on_step)[0]


def sweep_per_sample(solver: Any, func: Callable, y0: Tensor, t: Tensor, config: IntegrationConfig, *,
                     land: bool = False, on_output: Callable | None = None, on_step: Callable | None = None,
                     accumulate: Callable | None = None, totals: Any = None) -> tuple[Solution, Any]:
    """:func:`integrate_per_sample` with ``accumulate`` and ``totals`` (see
    :func:`~._traced.march`): the solution and the accumulated totals (None without)."""
    refuse_untraceable(solver, config, keep_dense=False, what="per-sample solving (options['per_sample'] or a 2-D t)",
                       remedy="they need the shared-step eager driver (a 1-D t without per_sample)")
    batch = y0.shape[0]
    counted_func = counted(func, t.dtype)
    nfe_before = counted_func.nfe
    time_dtype = t.dtype

    def field(time: Tensor, y: Tensor) -> Tensor:
        return counted_func(time.reshape(batch).to(time_dtype), y)

    compiled = is_tracing() or config.driver == "traced"
    marched = march(solver, field, y0, t.detach().to(_F64), config, entry_norm(config.controller.norm, y0),
                    loop=_while_loop if compiled else python_loop, land=land, on_output=on_output, on_step=on_step,
                    accumulate=accumulate, totals=totals)
    stats = Stats(steps_accepted=marched.accepted, steps_rejected=marched.rejected)
    solution = Solution(ys=marched.ys, stats=stats, next_step=marched.h.reshape(batch), status=marched.status)
    if is_tracing():
        return solution, marched.totals
    stats.nfe_forward = counted_func.nfe - nfe_before
    if compiled:  # the while loop's body ran compiled: its evaluations counted from the iterations
        stats.nfe_forward += int((marched.accepted + marched.rejected).max()) * (solver.evaluations_per_step or 0)
    failed = (marched.status != Status.SUCCESS.value).nonzero()
    if len(failed):
        entry = int(failed[0])
        _raise_for(Status(int(marched.status[entry])), float(marched.t.reshape(batch)[entry]), float(t[entry, -1]),
                   float(marched.h.reshape(batch)[entry]), stats.nfe_forward, config, entry=f" (batch entry {entry})")
    return solution, marched.totals
