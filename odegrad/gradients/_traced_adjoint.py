"""``gradient="backsolve"``, ``"gq"`` and ``"interp"`` on the traced driver: the forward solve and
the whole backward pass are each one ``torch.while_loop``, so a training step compiles into one
graph (``torch.compile(fullgraph=True)``), where the eager backward pass is a graph break.

The backward pass is one sweep from the last output time to the first (the per-sample loop body,
:func:`~odegrad.solvers.sweep_per_sample`; a shared-step solve is a batch of one entry) of the
state, per entry,

    [y, a, g, d],   dy/dt = f,   da/dt = −aᵀ∂f/∂y,

which lands on every output time, where dL/dy_i is added to a and y is reset to the stored forward
output (as the eager backward does between its segments) after its miss has been measured: d
carries the largest miss so far in the drift check's units (:func:`~._base.drift_unit`) and the
output where it happened, outside the error norm. The step-size controller is never restarted
(the eager backward solves each segment on its own). dL/dθ = ∫ aᵀ∂f/∂θ dt:

* ``backsolve``, shared step: g integrated with the state, dg/dt = −aᵀ∂f/∂θ (in the error norm
  unless ``seminorm``) — the classic augmented system;
* ``backsolve`` and ``interp`` per sample, and ``gq``: no g block; after each step the quadrature
  of the step (its own Runge–Kutta stages and weights, or ``nodes`` Gauss–Legendre nodes for gq,
  default ``min_nodes``, y and a read off the step's dense output) is added to a sum over all
  steps and entries that the loop carries (``accumulate``) — as the eager per-sample sweep does:
  dL/dθ sums over the batch, so it cannot be a per-entry state;
* ``interp``: no y in the state — it is read from Chebyshev interpolants of the forward solution,
  one per entry and segment with a fixed node count (``nodes``, default :data:`TRACED_NODES`: a
  traced loop cannot choose a count per segment at run time), whose nodes and held-out points the
  forward solve takes as extra output times (they never shorten its steps); g as for backsolve. A
  segment that misses the held-out check refuses like the eager interp.

Inside a loop body ``torch.autograd.grad`` cannot run; the vector–Jacobian products are
``torch.func.vjp`` of func with its parameters swapped in by ``torch.func.functional_call``, so
func must be an ``nn.Module`` whose registered parameters are the ones differentiated (the usual
case: ``odeint(module, ...)``, :class:`~odegrad.models.NeuralODE`). A failure (max_steps,
non-finite values, step underflow, a drift refusal) raises the eager backward's exception outside
``torch.compile``; inside a compiled graph nothing can be raised, and the gradients are NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._counting import check_func_output
from ..errors import InterpolationError
from ..solvers import (
    Solution,
    Stats,
    Status,
    integrate_per_sample,
    integrate_traced,
    is_tracing,
    solves_per_sample,
    sweep_per_sample,
    traced_unsupported,
    uses_traced_driver,
)
from ._base import (
    REVERSE_DRIFT_FACTOR,
    BlockNorm,
    Problem,
    drift_tolerances,
    drift_unit,
    flat_cat,
    refuse_drift,
    split_like,
)
from ._per_entry_chebyshev import PerEntryChebyshev, chebyshev_output_times, chebyshev_trajectory, from_outputs
from ._per_sample import step_rule, weighted_nodes

TRACED_NODES = 16
"""Chebyshev nodes per observation segment of the traced interp backward when the backend sets no
``nodes``: the eager interp's automatic rule (4 doubled up to 64, splitting beyond) needs a node
count per segment known only at run time. On the spiral benchmark's float32 segments 8 nodes
already pass the held-out check (worst 0.024 of its tolerance, 16: 0.029, the rounding floor);
16 leave room for longer segments at 2·16 extra output times per segment, and a segment that
needs more is refused by the check."""


def parameter_names(func: Any, params: tuple[Tensor, ...]) -> tuple[str, ...] | None:
    """The names under which ``func`` (an ``nn.Module``) registers each of ``params``, or None when
    func is not a module or does not own them all (their values cannot then be swapped in)."""
    if not isinstance(func, nn.Module):
        return None
    named = list(func.named_parameters())
    names = []
    for p in params:
        name = next((name for name, q in named if q is p), None)
        if name is None:
            return None
        names.append(name)
    return tuple(names)


def traces_backward(backend: Any, problem: Problem) -> bool:
    """Whether ``problem``'s solve through the adjoint ``backend`` runs on the traced driver,
    backward pass included: the forward solve is traced (``driver="traced"``, or ``"auto"`` under
    ``torch.compile``), the backward method is an explicit adaptive Runge–Kutta method, nothing
    asked for needs the eager driver, and func is a module owning the parameters."""
    if not uses_traced_driver(problem.solver, problem.config, problem.keep_dense):
        return False
    solver = backend.backward_solver(problem)
    return (solves_per_sample(solver) and not traced_unsupported(solver, backend.backward_config(problem), False)
            and parameter_names(problem.func, problem.params) is not None)


def entry_rows(t: Tensor) -> Tensor:
    """Output times as one row per entry, ``Tensor[B, n]``: a per-sample ``t`` itself, a 1-D
    (shared-step) ``t`` as a batch of one entry."""
    return t if t.dim() == 2 else t[None]


@dataclass(frozen=True)
class Sweep:
    """What a traced backward sweep does besides backsolve's: ``nodes`` Gauss–Legendre nodes per
    backward step for the parameter integral (gq), or y read from ``chebyshev``-node interpolants
    checked with ``check = (rtol, atol)`` (interp) instead of being solved backwards."""

    nodes: int | None = None
    chebyshev: int | None = None
    check: tuple[float, float] = (0.0, 0.0)


def traced_adjoint(backend: Any, problem: Problem, sweep: Sweep = Sweep()) -> Solution:
    """Solve ``problem`` on the traced driver with the traced backward ``sweep`` as its autograd
    backward. ``Solution.stats``: the forward steps (0-dim tensors under ``torch.compile``).

    Raises:
        InterpolationError: outside ``torch.compile``, an interp segment misses the held-out check
            (``on_failure="raise"``).
    """
    stats = Stats()
    ys, status, accepted, rejected = _TracedAdjoint.apply(backend, problem, sweep, stats, problem.y0,
                                                          *problem.params)
    if is_tracing() or problem.t.dim() == 2:  # tensors (per sample: one count per entry)
        stats.steps_accepted, stats.steps_rejected = accepted, rejected
    else:
        stats.steps_accepted, stats.steps_rejected = int(accepted), int(rejected)
    return Solution(ys=ys, stats=stats, status=status)


class _TracedAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, backend: Any, problem: Problem, sweep: Sweep, stats: Stats, y0: Tensor, *params: Tensor):
        n, t = sweep.chebyshev, problem.t
        per_sample, rows = t.dim() == 2, entry_rows(t)
        times = t if n is None else chebyshev_output_times(rows, n).reshape(*t.shape[:-1], -1)
        solve = integrate_per_sample if per_sample else integrate_traced
        solution = solve(problem.solver, problem.func, y0.detach(), times, problem.config)
        ys, values, failed = solution.ys, solution.ys, torch.zeros((), dtype=torch.bool, device=y0.device)
        if n is not None:
            values, ys, error = from_outputs(solution.ys if per_sample else solution.ys[None], rows, n, *sweep.check)
            ys, failed = (ys if per_sample else ys[0]), (error > 1.0).any()
            if not is_tracing() and bool(failed):
                _refuse_interpolant(backend, error, n, sweep.check, per_sample)
        if not is_tracing():
            stats.nfe_forward = solution.stats.nfe_forward
        accepted = torch.as_tensor(solution.stats.steps_accepted)
        rejected = torch.as_tensor(solution.stats.steps_rejected)
        ctx.backend, ctx.problem, ctx.sweep, ctx.stats = backend, problem, sweep, stats
        ctx.save_for_backward(ys, accepted, values, failed)
        ctx.mark_non_differentiable(solution.status, accepted, rejected)
        return ys, solution.status, accepted, rejected

    @staticmethod
    def backward(ctx, grad_ys: Tensor, *unused: Any):
        ys, forward_steps, values, failed = ctx.saved_tensors
        sweep, problem = ctx.sweep, ctx.problem
        trajectory = None if sweep.chebyshev is None else chebyshev_trajectory(entry_rows(problem.t), values)
        grad_y0, grad_params, nfe = adjoint_sweep(ctx.backend, problem, ys, grad_ys, forward_steps, sweep.nodes,
                                                  trajectory)
        if is_tracing() and getattr(ctx.backend, "on_failure", "raise") == "raise":
            grad_y0 = torch.where(failed, torch.nan, grad_y0)
            grad_params = tuple(torch.where(failed, torch.nan, g) for g in grad_params)
        if not is_tracing():
            ctx.stats.nfe_backward += nfe
        return (None, None, None, None, grad_y0, *grad_params)


def adjoint_sweep(backend: Any, problem: Problem, ys: Tensor, grad_ys: Tensor, forward_steps: Tensor,
                  nodes: int | None, trajectory: PerEntryChebyshev | None = None
                  ) -> tuple[Tensor, tuple[Tensor, ...], int]:
    """dL/dy0, dL/dθ per parameter and the NFE spent (0 under ``torch.compile``) from one backward
    sweep of ``[y, a, g, d]`` per entry over all output times (see the module docstring; a
    shared-step solve is a batch of one entry). ``nodes``: None for the steps' own Runge–Kutta
    rule, else gq's Gauss–Legendre nodes per step; ``trajectory``: y read from it, not solved.
    ``ys``, ``grad_ys = dL/dys``: ``Tensor[n, *shape]`` (per sample ``Tensor[B, n, *shape]``);
    ``forward_steps``: the forward solve's accepted steps (per entry), the rounding floor of the
    drift unit."""
    func, params, y0 = problem.func, problem.params, problem.y0
    per_sample, t = problem.t.dim() == 2, entry_rows(problem.t)
    entry_shape = y0.shape[1:] if per_sample else y0.shape
    batch, count = t.shape
    n, entries = entry_shape.numel(), torch.arange(batch, device=y0.device)
    names = parameter_names(func, params)
    integrated = nodes is None and not per_sample  # g a block of the state; else summed over all steps and entries
    carried = n if trajectory is None else 0  # the size of the y block (interp: none)
    drift_slots = 2 if trajectory is None else 0
    size = sum(p.numel() for p in params)
    sizes = (carried, n, size if integrated else 0, drift_slots)
    solver = backend.backward_solver(problem)
    in_norm = 3 if integrated and not backend.seminorm else 2  # an empty y block counts too
    config = backend.backward_config(problem, norm=BlockNorm(sizes, in_norm))
    # copies: the loop's closure inputs may not alias each other
    stored = (ys if per_sample else ys[None]).reshape(batch, count, n).clone()
    jumps = (grad_ys if per_sample else grad_ys[None]).reshape(batch, count, n).to(ys.dtype, copy=True)
    unit = drift_unit(*drift_tolerances(config, problem.config), stored.abs().amax(dim=(1, 2)), ys.dtype,
                      forward_steps.reshape(-1)).reshape(batch, 1)

    def call(time: Tensor, y: Tensor, values: tuple[Tensor, ...]) -> Tensor:
        """func at per-entry times ``Tensor[B]`` and states ``Tensor[B, *entry_shape]``, with the
        parameter ``values`` swapped in."""
        swapped = dict(zip(names, values))
        if per_sample:
            return check_func_output(torch.func.functional_call(func, swapped, (time, y)), y)
        return check_func_output(torch.func.functional_call(func, swapped, (time.reshape(()), y[0])), y[0])[None]

    def split(time: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y = state[:, :n] if trajectory is None else trajectory(time.to(torch.float64)).reshape(batch, n).to(ys.dtype)
        return y.reshape(batch, *entry_shape), state[:, carried:carried + n].reshape(batch, *entry_shape)

    def augmented(time: Tensor, state: Tensor) -> Tensor:
        y, a = split(time, state)
        if integrated:
            f, pullback = torch.func.vjp(lambda y, *values: call(time, y, values), y, *params)
            vjp_y, *vjp_params = pullback(a)
            g = -flat_cat(tuple(vjp_params), state).reshape(batch, -1)
        else:
            f, pullback = torch.func.vjp(lambda y: call(time, y, params), y)
            (vjp_y,) = pullback(a)
            g = state.new_zeros(batch, 0)
        parts = (f.reshape(batch, n)[:, :carried], -vjp_y.reshape(batch, n), g, state.new_zeros(batch, drift_slots))
        return torch.cat(parts, dim=1)

    def quadrature(total: Tensor, time: Tensor, h: Tensor, accepted: Tensor, state: Tensor, result) -> Tensor:
        """``total`` plus the step's quadrature of ``−∫ aᵀ∂f/∂θ`` over all entries (accepted steps)."""
        terms = weighted_nodes(solver, nodes, time, h, accepted, state, result, split)

        def evaluate(*values: Tensor) -> Tensor:
            return torch.stack([call(at.to(t.dtype), y, values) for at, y, _ in terms])

        _, pullback = torch.func.vjp(evaluate, *params)
        return total + flat_cat(pullback(torch.stack([cotangent for *_, cotangent in terms])), total)

    def worst(d: Tensor, y: Tensor, output: Tensor, here: Tensor) -> Tensor:
        """``d = [largest miss, its output index]`` per entry, updated with y's miss of its output."""
        miss = ((y - stored[entries, output]).abs().amax(dim=1, keepdim=True) / unit).to(y.dtype)
        larger = here & (miss > d[:, :1])
        return torch.where(larger, torch.cat([miss, output[:, None].to(y.dtype)], dim=1), d)

    def land(time: Tensor, state: Tensor, landed: Tensor, index: Tensor) -> Tensor:
        output = count - 1 - index.clamp(0, count - 1)  # index counts along the reversed times
        y, a, g, d = state.split(sizes, dim=1)
        here = landed[:, None]
        a = a + torch.where(here, jumps[entries, output], 0.0)
        if trajectory is None:
            d = worst(d, y, output, here)
            y = torch.where(here, stored[entries, output], y)  # the eager backward's reset between segments
        return torch.cat([y, a, g, d], dim=1)

    start = torch.cat([stored[:, -1, :carried], jumps[:, -1], stored.new_zeros(batch, sizes[2] + drift_slots)], dim=1)
    summed = not integrated and bool(params)
    sweep, total = sweep_per_sample(solver, augmented, start, t.flip(1), config, land=True, on_output=land,
                                    accumulate=quadrature if summed else None,
                                    totals=stored.new_zeros(size) if summed else None)
    y_end, a_end, g_end, d_end = sweep.ys[:, -1].split(sizes, dim=1)
    grad_y0 = (a_end + jumps[:, 0]).reshape(y0.shape).to(y0.dtype)
    grad_params = split_like(g_end.reshape(-1) if integrated else (total if summed else stored.new_zeros(0)), params)
    drift = torch.zeros(batch, 2, dtype=ys.dtype, device=ys.device)
    if trajectory is None:
        first = torch.zeros(batch, dtype=torch.int64, device=ys.device)
        drift = worst(d_end, y_end, first, torch.ones_like(first, dtype=torch.bool)[:, None])
    if is_tracing():  # no exception can leave a graph: a failed sweep gives NaN gradients (and 0 NFE)
        failed = (sweep.status != Status.SUCCESS.value).any()
        if getattr(backend, "on_drift", "raise") == "raise":
            failed = failed | (drift[:, 0] > REVERSE_DRIFT_FACTOR).any()
        grad_y0 = torch.where(failed, torch.nan, grad_y0)
        grad_params = tuple(torch.where(failed, torch.nan, g) for g in grad_params)
    elif bool((drift[:, 0] > REVERSE_DRIFT_FACTOR).any()):
        entry = int(drift[:, 0].argmax())
        output = int(drift[entry, 1])
        where = f" of batch entry {entry}" if per_sample else f" (t={float(t[entry, output]):.6g})"
        refuse_drift(backend.name, f"the stored forward output {output}{where}", float(drift[entry, 0]),
                     f"the {stored.dtype} rounding of the forward steps", backend.on_drift, output)
    evaluations = 0
    if summed and not is_tracing():  # the quadrature's evaluations: its nodes in every iteration
        iterations = int((sweep.stats.steps_accepted + sweep.stats.steps_rejected).max())
        evaluations = iterations * len(step_rule(solver, nodes)[1])
    return grad_y0, grad_params, sweep.stats.nfe_forward + evaluations


def _refuse_interpolant(backend: Any, error: Tensor, n: int, check: tuple[float, float], per_sample: bool) -> None:
    """Raise :class:`InterpolationError` (or warn, ``on_failure="warn"``): the ``n``-node
    interpolant of a segment misses its held-out points by ``error`` (per entry and segment,
    ``Tensor[B, segments]``) check units."""
    entry, segment = divmod(int(error.argmax()), error.shape[1])
    where = f"observation segment {segment}" + (f" of batch entry {entry}" if per_sample else "")
    message = (f"gradient='interp' on the traced driver: the {n}-node Chebyshev interpolant of the forward "
               f"trajectory on {where} misses held-out points by {float(error[entry, segment]):.3g}x the check "
               f"tolerance (rtol={check[0]:.3g}, atol={check[1]:.3g}); the traced loop uses one node count per "
               "segment. Give more nodes (Interpolation(nodes=...)), add output times, or use "
               "options={'driver': 'eager'}")
    if backend.on_failure == "raise":
        raise InterpolationError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=5)
