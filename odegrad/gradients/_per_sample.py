"""The backward pass of the adjoint-type backends for per-sample solves (``t: Tensor[B, n]``).

One backward sweep per entry, all entries batched: the adjoint system is solved from each entry's
last output time back to its first with that entry's own steps (the per-sample loop), landing
exactly on the entry's output times, where dL/dy_i is added to its adjoint a. The step-size
controller is never restarted: the carried derivative of the entries that landed is recomputed,
the others step on.

The parameter gradient ∫ aᵀ∂f/∂θ dt is summed over the batch, so it cannot be a per-entry state
of the sweep without per-sample parameter gradients. It is accumulated after every accepted
backward step of every entry instead (one batched evaluation of func per node, one backward pass
per step), and the backends keep their defining choices:

* ``backsolve``: [y, a] solved backwards, y reset to the stored output at each output time (as
  torchdiffeq's adjoint does between segments, after the drift check); the parameter integral is
  the steps' own Runge–Kutta quadrature — the stages and weights that integrating it as an extra
  state of the sweep would use (with the error norm leaving it out);
* ``gq``: the same sweep, the parameter integral by Gauss–Legendre nodes on each step, y and a
  read off the step's dense output;
* ``interp``: only a is solved, y read from Chebyshev interpolants of the forward solution per
  entry and segment (:mod:`._per_entry_chebyshev`); the parameter integral as for backsolve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from ..solvers import TimeAxis, integrate_per_sample, is_tracing, rms_norm
from ._base import (
    REVERSE_DRIFT_FACTOR,
    BlockNorm,
    Problem,
    drift_tolerances,
    drift_unit,
    func_vjp,
    legendre_rule,
    refuse_drift,
    vjp,
)

STEP_NODES = 3
"""Gauss–Legendre nodes per backward step where the backward solver has no stage rule to use:
exact for polynomials of degree 5, the order of the 5th-order methods' steps."""


def per_sample_backward(backend: Any, problem: Problem, ys: Tensor, grad_ys: Tensor, *,
                        nodes: int | None = None, trajectory: Callable[[Tensor], Tensor] | None = None,
                        on_drift: str = "raise") -> tuple[Tensor, tuple[Tensor, ...], int]:
    """dL/dy0 ``Tensor[B, *shape]``, dL/dθ per parameter and the NFE spent, given the outputs
    ``ys`` and ``grad_ys = dL/dys`` (both ``Tensor[B, n, *shape]``).

    Args:
        backend: the adjoint backend (its backward method and tolerances).
        problem: the per-sample problem (``t: Tensor[B, n]``).
        nodes: Gauss–Legendre nodes per backward step of the parameter quadrature (None: the
            backward steps' own Runge–Kutta stages).
        trajectory: y at per-entry times ``Tensor[B]`` (float64) as ``Tensor[B, *shape]``, read
            instead of solving y backwards (None: y is solved backwards with a).
        on_drift: ``"raise"`` or ``"warn"`` when a reverse-solved y misses a stored output.
    """
    func, y0, t = problem.func, problem.y0, problem.t
    batch, shape = y0.shape[0], y0.shape[1:]
    size = shape.numel()
    entries = torch.arange(batch, device=y0.device)
    count = t.shape[1]
    carries_y = trajectory is None
    stored = ys.reshape(batch, count, size)
    jumps = grad_ys.reshape(batch, count, size)

    def split(time: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y = state[:, :size] if carries_y else trajectory(time.to(torch.float64)).reshape(batch, size)
        return y.reshape(batch, *shape), state[:, -size:].reshape(batch, *shape)

    def adjoint(time: Tensor, state: Tensor) -> Tensor:
        y, a = split(time, state)
        f, vjp_y, _ = func_vjp(func, time, y, a, ())
        parts = (f.reshape(batch, size), -vjp_y.reshape(batch, size)) if carries_y else (-vjp_y.reshape(batch, size),)
        return torch.cat(parts, dim=1)

    solver = backend.backward_solver(problem)
    config = backend.backward_config(problem, norm=BlockNorm((size, size)) if carries_y else rms_norm)
    drift = _DriftCheck(backend.name, stored, *drift_tolerances(config, problem.config), on_drift)
    quadrature = _StepQuadrature(func, problem.params, nodes, split, t.dtype)

    def land(time: Tensor, state: Tensor, landed: Tensor, index: Tensor) -> Tensor:
        output = count - 1 - index.clamp(0, count - 1)  # index counts along the reversed row
        a = state[:, -size:] + torch.where(landed[:, None], jumps[entries, output], 0.0)
        if not carries_y:
            return a
        y = state[:, :size]
        drift.check(y, landed, output)
        y = torch.where(landed[:, None], stored[entries, output], y)  # as torchdiffeq's adjoint: no drift carried on
        return torch.cat([y, a], dim=1)

    def step(time: Tensor, h: Tensor, accepted: Tensor, state: Tensor, result) -> None:
        drift.count(accepted)
        quadrature.add(solver, time, h, accepted, state, result)

    start = jumps[:, -1] if not carries_y else torch.cat([stored[:, -1], jumps[:, -1]], dim=1)
    sweep = integrate_per_sample(solver, adjoint, start, t.flip(1), config, land=True, on_output=land, on_step=step)
    grad_y0 = sweep.ys[:, -1, -size:] + jumps[:, 0]
    return grad_y0.reshape(y0.shape), quadrature.totals(), sweep.stats.nfe_forward + quadrature.evaluations


class _DriftCheck:
    """The drift check of reverse-solved states in per-sample sweeps: as an entry lands on an output
    time, its rebuilt y is compared with the stored forward output in the units of
    :func:`~._base.drift_unit` (per entry: its own magnitude and backward steps since its last
    output; computed here for all entries at once), refused past
    :data:`~._base.REVERSE_DRIFT_FACTOR`."""

    def __init__(self, backend: str, stored: Tensor, rtol: float, atol: float, on_drift: str):
        self.backend, self.stored, self.rtol, self.atol, self.on_drift = backend, stored, rtol, atol, on_drift
        self.scale = stored.abs().amax(dim=(1, 2))
        self.steps = torch.zeros(len(stored), dtype=torch.int64, device=stored.device)

    def count(self, accepted: Tensor) -> None:
        self.steps += accepted.reshape(-1).to(torch.int64)

    def check(self, y: Tensor, landed: Tensor, output: Tensor) -> None:
        if not bool(landed.any()):
            return
        entries = torch.arange(len(y), device=y.device)
        unit = drift_unit(self.rtol, self.atol, self.scale, y.dtype, self.steps)
        miss = torch.where(landed, (y - self.stored[entries, output]).abs().amax(dim=1) / unit, 0.0)
        worst = int(miss.argmax())
        if float(miss[worst]) > REVERSE_DRIFT_FACTOR:
            refuse_drift(self.backend, f"the forward output {int(output[worst])} of batch entry {worst}",
                         float(miss[worst]), f"the {y.dtype} rounding of its steps", self.on_drift, int(output[worst]))
        self.steps = torch.where(landed, 0, self.steps)


class _StepQuadrature:
    """dL/dθ = Σ over accepted backward steps of every entry of ``−h Σ_k w_k a_kᵀ ∂f/∂θ(τ_k, y_k)``:
    with ``nodes=None`` the step's own Runge–Kutta quadrature (its stages and weights b_i: what
    integrating the parameter integral as an extra state of the sweep gives, error control
    leaving it out), else ``nodes`` Gauss–Legendre nodes with y and a read off the step's dense
    output. One evaluation of func for the whole batch per node and one backward pass per step.
    Entries whose step was rejected (or that are done) get weight 0 and their own current state, so
    nothing non-finite enters the sum."""

    def __init__(self, func, params: tuple[Tensor, ...], nodes: int | None, split, time_dtype: torch.dtype):
        self.func, self.params, self.split, self.time_dtype, self.nodes = func, params, split, time_dtype, nodes
        self.wanted = [i for i, p in enumerate(params) if p.requires_grad]
        self.sums = [torch.zeros_like(p) for p in params]
        self.evaluations = 0

    def add(self, solver, time: Tensor, h: Tensor, accepted: Tensor, state: Tensor, result) -> None:
        if not self.wanted or not bool(accepted.any()):
            return
        outputs, cotangents = [], []
        with torch.enable_grad():
            for at, y, cotangent in weighted_nodes(solver, self.nodes, time, h, accepted, state, result, self.split):
                outputs.append(self.func(at.to(self.time_dtype), y))
                cotangents.append(cotangent)
            total = torch.stack(outputs).to(cotangents[0].dtype)  # on the graph: the backward pass runs under no_grad
            grads = vjp(total, [self.params[i] for i in self.wanted], torch.stack(cotangents))
        self.evaluations += len(outputs)
        for i, g in zip(self.wanted, grads):
            if g is not None:
                self.sums[i] += g

    def totals(self) -> tuple[Tensor, ...]:
        return tuple(self.sums)


def step_nodes(solver: Any, nodes: int | None, time: Tensor, h: Tensor, accepted: Tensor, state: Tensor,
               result: Any) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The nodes of one backward step's parameter quadrature for a batch of entries, each as
    ``(time Tensor[B] (float64), state Tensor[B, W], scale Tensor[B, 1])`` with ``scale = −h·w``:
    with ``nodes=None`` the step's own Runge–Kutta stages and weights, else ``nodes`` (default
    :data:`STEP_NODES`) Gauss–Legendre nodes read off the step's dense output. Entries whose step
    was rejected (or that are done) get their own start time and state and scale 0, so nothing
    non-finite enters a sum."""
    batch = state.shape[0]
    ok = accepted.reshape(batch, 1)
    start, step = time.reshape(batch, 1), h.reshape(batch, 1)
    fractions, weights, stages = step_rule(solver, nodes)
    node_times = start + step * start.new_tensor(fractions)  # [B, k]
    if stages is not None:
        states = solver.stage_states(result.dense_info, step, stages)
    else:  # read off the step's dense output (done entries: step 0, read with 1: no 0/0)
        readable = torch.where(step == 0, torch.ones_like(step), step)
        dense = pytree.tree_map(lambda x: x.unsqueeze(1), result.dense_info)
        states = solver.interpolate(dense, start[:, :, None], readable[:, :, None], node_times[:, :, None]).unbind(1)
    return [(torch.where(ok, node_times[:, k:k + 1], start).reshape(batch), torch.where(ok, states[k], state),
             torch.where(ok, -step * weight, 0.0)) for k, weight in enumerate(weights)]


def weighted_nodes(solver: Any, nodes: int | None, time: Tensor, h: Tensor, accepted: Tensor, state: Tensor,
                   result: Any, split: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
                   ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """:func:`step_nodes` as terms of the step's share of ``−∫ aᵀ∂f/∂θ``: per node
    ``(time Tensor[B], y, a · scale)``, with y and a (``Tensor[B, *shape]``) from
    ``split(time, state)``: the points where func is evaluated and the cotangents of its VJP."""
    terms = []
    for at, node_state, scale in step_nodes(solver, nodes, time, h, accepted, state, result):
        y, a = split(at, node_state)
        terms.append((at, y, a * scale.to(a.dtype).reshape(len(a), *([1] * (a.dim() - 1)))))
    return terms


def step_rule(solver: Any, nodes: int | None) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...] | None]:
    """A backward step's quadrature: fractions of the step, weights, and the solver's stages they are
    (``nodes=None``: the step's own Runge–Kutta stages), or None for Gauss–Legendre nodes."""
    if nodes is None and hasattr(solver, "stage_rule"):
        return solver.stage_rule()
    rule = legendre_rule.__wrapped__ if is_tracing() else legendre_rule  # torch.compile traces no lru_cache
    x, w = rule(nodes or STEP_NODES)
    return tuple((xk + 1) / 2 for xk in x), tuple(wk / 2 for wk in w), None


def solve_keeping_steps(problem: Problem) -> tuple[Any, Callable[[Tensor], Tensor]]:
    """The per-sample forward solve of ``problem`` (without a graph), and a reader of its accepted
    steps' dense output per entry: ``sample(t: Tensor[B, K]) -> Tensor[B, K, *shape]`` (float64
    times, row b read from entry b's steps; a time outside the span reads the nearest step). The
    record needs the eager loop (a value read per step), whatever ``options['driver']`` says."""
    record = _DenseRecord(problem.solver)
    solution = integrate_per_sample(problem.solver, problem.func, problem.y0, problem.t,
                                    replace(problem.config, driver="eager"), on_step=record.add)
    return solution, record.finish(problem.t)


class _DenseRecord:
    """Every accepted step of a per-sample solve (its start, size and dense output per entry),
    looked up per entry."""

    def __init__(self, solver: Any):
        self.solver = solver
        self.starts: list[Tensor] = []
        self.sizes: list[Tensor] = []
        self.taken: list[Tensor] = []
        self.dense: list[Any] = []

    def add(self, time: Tensor, h: Tensor, accepted: Tensor, state: Tensor, result) -> None:
        if not bool(accepted.any()):
            return
        batch = len(state)
        self.starts.append(time.reshape(batch))
        self.sizes.append(h.reshape(batch))
        self.taken.append(accepted.reshape(batch))
        self.dense.append(pytree.tree_map(lambda x: x.detach(), result.dense_info))

    def finish(self, t: Tensor) -> Callable[[Tensor], Tensor]:
        starts, sizes, taken = torch.stack(self.starts), torch.stack(self.sizes), torch.stack(self.taken)
        dense = pytree.tree_map(lambda *leaves: torch.stack(leaves), *self.dense)
        self.dense = []
        axis = TimeAxis.of_rows(t, 1)
        # each entry's accepted steps in solve order: a step not taken sorts last
        keys, order = torch.sort(torch.where(taken.T, axis.along(starts.T), torch.inf), dim=1)  # [B, S]
        keys = keys.contiguous()
        last = taken.sum(dim=0)[:, None] - 1  # the position of each entry's last accepted step
        entries = torch.arange(starts.shape[1], device=starts.device)[:, None]

        def sample(time: Tensor) -> Tensor:
            position = (torch.searchsorted(keys, axis.along(time).contiguous(), right=True) - 1).clamp(min=0)
            step = order.gather(1, torch.minimum(position, last))  # [B, K]: the step holding each time
            info = pytree.tree_map(lambda leaf: leaf[step, entries], dense)  # [B, K, *shape]
            rank = next(leaf for leaf in pytree.tree_leaves(info) if isinstance(leaf, Tensor)).dim()
            column = (*time.shape, *([1] * (rank - 2)))
            return self.solver.interpolate(info, starts[step, entries].reshape(column),
                                           sizes[step, entries].reshape(column), time.reshape(column))

        return sample
