"""``gradient="backsolve"`` and ``"gq"`` on the traced driver: the forward solve and the whole
backward pass are each one ``torch.while_loop``, so a training step compiles into one graph
(``torch.compile(fullgraph=True)``), where the eager backward pass is a graph break.

The backward pass is one sweep from the last output time to the first (the per-sample loop body
with a batch of one entry, :func:`~odegrad.solvers.integrate_per_sample`) of the state

    [y, a, g, d],   dy/dt = f,   da/dt = −aᵀ∂f/∂y,

which lands on every output time, where dL/dy_i is added to a and y is reset to the stored forward
output (as the eager backward does between its segments) after its miss has been measured: d
carries the largest miss so far in the drift check's units (:func:`~._base.drift_unit`) and the
output where it happened, outside the error norm. The step-size controller is never restarted
(the eager backward solves each segment on its own). g collects dL/dθ = ∫ aᵀ∂f/∂θ dt:

* ``backsolve``: integrated with the state, dg/dt = −aᵀ∂f/∂θ (in the error norm unless
  ``seminorm``) — the classic augmented system;
* ``gq``: dg/dt = 0 and, after each accepted backward step, the step's Gauss–Legendre quadrature
  (``nodes`` per step, default ``min_nodes``) with y and a read off the step's dense output, as in
  per-sample solves; y and a alone drive the error norm.

Inside a loop body ``torch.autograd.grad`` cannot run; the vector–Jacobian products are
``torch.func.vjp`` of func with its parameters swapped in by ``torch.func.functional_call``, so
func must be an ``nn.Module`` whose registered parameters are the ones differentiated (the usual
case: ``odeint(module, ...)``, :class:`~odegrad.models.NeuralODE`). A failure (max_steps,
non-finite values, step underflow, a drift refusal) raises the eager backward's exception outside
``torch.compile``; inside a compiled graph nothing can be raised, and the gradients are NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._counting import check_func_output
from ..solvers import (
    Solution,
    Stats,
    Status,
    integrate_per_sample,
    integrate_traced,
    is_tracing,
    solves_per_sample,
    traced_unsupported,
    uses_traced_driver,
)
from ._base import (
    REVERSE_DRIFT_FACTOR,
    BlockNorm,
    Problem,
    drift_unit,
    flat_cat,
    legendre_rule,
    refuse_drift,
    split_like,
)


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
    if problem.t.dim() != 1 or not uses_traced_driver(problem.solver, problem.config, problem.keep_dense):
        return False
    solver = backend.backward_solver(problem)
    return (solves_per_sample(solver) and not traced_unsupported(solver, backend.backward_config(problem), False)
            and parameter_names(problem.func, problem.params) is not None)


def traced_adjoint(backend: Any, problem: Problem, nodes: int | None = None) -> Solution:
    """Solve ``problem`` on the traced driver with the traced backward sweep as its autograd
    backward: ``nodes=None`` integrates the parameter gradient with the state (backsolve), else
    ``nodes`` Gauss–Legendre nodes per backward step (gq). ``Solution.stats``: the forward steps
    (0-dim tensors under ``torch.compile``)."""
    stats = Stats()
    ys, status, accepted, rejected = _TracedAdjoint.apply(backend, problem, nodes, stats, problem.y0,
                                                          *problem.params)
    if is_tracing():
        stats.steps_accepted, stats.steps_rejected = accepted, rejected
    else:  # the forward evaluations counted from the steps, as the traced driver does
        stats.steps_accepted, stats.steps_rejected = int(accepted), int(rejected)
    return Solution(ys=ys, stats=stats, status=status)


class _TracedAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, backend: Any, problem: Problem, nodes: int | None, stats: Stats, y0: Tensor, *params: Tensor):
        solution = integrate_traced(problem.solver, problem.func, y0.detach(), problem.t, problem.config)
        if not is_tracing():
            stats.nfe_forward = solution.stats.nfe_forward
        accepted = torch.as_tensor(solution.stats.steps_accepted)
        rejected = torch.as_tensor(solution.stats.steps_rejected)
        ctx.backend, ctx.problem, ctx.nodes, ctx.stats = backend, problem, nodes, stats
        ctx.save_for_backward(solution.ys, accepted)
        ctx.mark_non_differentiable(solution.status, accepted, rejected)
        return solution.ys, solution.status, accepted, rejected

    @staticmethod
    def backward(ctx, grad_ys: Tensor, *unused: Any):
        ys, forward_steps = ctx.saved_tensors
        grad_y0, grad_params, nfe = adjoint_sweep(ctx.backend, ctx.problem, ys, grad_ys, forward_steps, ctx.nodes)
        if not is_tracing():
            ctx.stats.nfe_backward += nfe
        return (None, None, None, None, grad_y0, *grad_params)


def adjoint_sweep(backend: Any, problem: Problem, ys: Tensor, grad_ys: Tensor, forward_steps: Tensor,
                  nodes: int | None) -> tuple[Tensor, tuple[Tensor, ...], int]:
    """dL/dy0, dL/dθ per parameter and the NFE spent (0 under ``torch.compile``) from one backward
    sweep of ``[y, a, g, d]`` over all output times (see the module docstring; ``nodes``: None for
    backsolve's integrated g, else gq's nodes per step), given ``ys`` and ``grad_ys = dL/dys``
    (``Tensor[n, *shape]``) and the forward solve's accepted steps (the rounding floor of the drift
    unit)."""
    func, params, t, y0 = problem.func, problem.params, problem.t, problem.y0
    shape, n, count = y0.shape, y0.numel(), len(t)
    names = parameter_names(func, params)
    sizes = (n, n, sum(p.numel() for p in params), 2)
    solver = backend.backward_solver(problem)
    in_norm = 3 if nodes is None and not backend.seminorm else 2
    config = backend.backward_config(problem, norm=BlockNorm(sizes, in_norm))
    (rtol, atol), forward = config.scalar_tolerances(), problem.config.scalar_tolerances()
    # copies: the loop's closure inputs may not alias each other
    stored, jumps = ys.reshape(count, n).clone(), grad_ys.reshape(count, n).to(ys.dtype, copy=True)
    unit = drift_unit(max(rtol, forward[0]), max(atol, forward[1]), ys.abs().amax(), ys.dtype, forward_steps)

    def call(time: Tensor, y: Tensor, values: tuple[Tensor, ...]) -> Tensor:
        return check_func_output(torch.func.functional_call(func, dict(zip(names, values)), (time, y)), y)

    def augmented(time: Tensor, state: Tensor) -> Tensor:
        y, a = state[0, :n].view(shape), state[0, n:2 * n].view(shape)
        moment = time.reshape(())
        if nodes is None:
            f, pullback = torch.func.vjp(lambda y, *values: call(moment, y, values), y, *params)
            vjp_y, *vjp_params = pullback(a)
            g = -flat_cat(tuple(vjp_params), state)
        else:
            f, pullback = torch.func.vjp(lambda y: call(moment, y, params), y)
            (vjp_y,) = pullback(a)
            g = state.new_zeros(sizes[2])
        return torch.cat((f.reshape(-1), -vjp_y.reshape(-1), g, state.new_zeros(sizes[3]))).unsqueeze(0)

    x, w = legendre_rule.__wrapped__(nodes or 1)  # uncached: torch.compile traces no lru_cache
    fractions, halves = [(xk + 1) / 2 for xk in x], [wk / 2 for wk in w]

    def quadrature(time: Tensor, h: Tensor, accepted: Tensor, state: Tensor, result) -> Tensor:
        """gq: the step's end state with the step's Gauss–Legendre quadrature of ``−∫ aᵀ∂f/∂θ``
        added to g (accepted steps)."""
        readable = torch.where(h == 0, torch.ones_like(h), h)  # a done entry's step is 0: no 0/0
        points = [solver.interpolate(result.dense_info, time, readable, time + readable * c) for c in fractions]
        moments = [(time + readable * c).reshape(()) for c in fractions]

        def evaluate(*values: Tensor) -> Tensor:
            return torch.stack([call(m, p[0, :n].view(shape), values) for m, p in zip(moments, points)])

        weights = torch.stack([-(readable * half).reshape(()).to(ys.dtype) * p[0, n:2 * n].view(shape)
                               for half, p in zip(halves, points)])
        _, pullback = torch.func.vjp(evaluate, *params)
        increment = flat_cat(pullback(weights), state)
        y1, a1, g1, d1 = result.y1.split(sizes, dim=1)
        g1 = g1 + torch.where(accepted.reshape(1, 1), increment.unsqueeze(0), 0.0)
        return torch.cat([y1, a1, g1, d1], dim=1)

    def worst(d: Tensor, y: Tensor, output: Tensor, here: Tensor) -> Tensor:
        """``d = [largest miss, its output index]`` updated with y's miss of ``stored[output]``."""
        miss = ((y - stored[output]).abs().amax(dim=1, keepdim=True) / unit).to(y.dtype)
        larger = here & (miss > d[:, :1])
        return torch.where(larger, torch.cat([miss, output[:, None].to(y.dtype)], dim=1), d)

    def land(time: Tensor, state: Tensor, landed: Tensor, index: Tensor) -> Tensor:
        output = count - 1 - index.clamp(0, count - 1)  # index counts along the reversed times
        y, a, g, d = state.split(sizes, dim=1)
        here = landed[:, None]
        d = worst(d, y, output, here)
        a = a + torch.where(here, jumps[output], 0.0)
        y = torch.where(here, stored[output], y)  # the eager backward's reset between segments
        return torch.cat([y, a, g, d], dim=1)

    start = torch.cat([stored[-1], jumps[-1], stored.new_zeros(sizes[2] + 2)]).unsqueeze(0)
    sweep = integrate_per_sample(solver, augmented, start, t.flip(0).unsqueeze(0), config, land=True,
                                 on_output=land, amend=None if nodes is None or not params else quadrature)
    y_end, a_end, g_end, d_end = sweep.ys[:, -1].split(sizes, dim=1)
    first = torch.zeros_like(sweep.status)
    drift, missed = worst(d_end, y_end, first, torch.ones_like(first, dtype=torch.bool)[:, None]).unbind(1)
    grad_y0 = (a_end.reshape(shape) + jumps[0].view(shape)).to(y0.dtype)
    grad_params = split_like(g_end.reshape(-1), params)
    if is_tracing():  # no exception can leave a graph: a failed sweep gives NaN gradients (and 0 NFE)
        failed = sweep.status[0] != Status.SUCCESS.value
        if backend.on_drift == "raise":
            failed = failed | (drift[0] > REVERSE_DRIFT_FACTOR)
        grad_y0 = torch.where(failed, torch.nan, grad_y0)
        grad_params = tuple(torch.where(failed, torch.nan, g) for g in grad_params)
    elif float(drift) > REVERSE_DRIFT_FACTOR:
        output = int(missed)
        refuse_drift(backend.name, f"the stored forward output {output} (t={float(t[output]):.6g})", float(drift),
                     f"the {stored.dtype} rounding of the forward steps", backend.on_drift, output)
    evaluations = 0 if nodes is None or is_tracing() else nodes * int(sweep.stats.steps_accepted.sum()
                                                                     + sweep.stats.steps_rejected.sum())
    return grad_y0, grad_params, sweep.stats.nfe_forward + evaluations
