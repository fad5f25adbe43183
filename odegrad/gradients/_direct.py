"""``gradient="direct"``: plain autograd through every operation of the forward integrator.

Exact gradients of the discrete solution; memory grows with the number of steps. NaN/Inf in the
backward pass propagate silently into the gradients, as in any autograd graph, unless
``options={"check_backward": True}``: then every evaluation of func, the incoming gradient dL/dys
and dL/dy0 are checked as the backward pass reaches them, and :class:`~odegrad.errors.NonFiniteValue`
names the first place (and time) a non-finite gradient appeared.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..solvers import Solution
from ._base import Backend, Problem, require_finite


class Direct(Backend):
    """Backpropagate through the solver's operations (discretise-then-optimise)."""

    name = "direct"

    def solve(self, problem: Problem) -> Solution:
        """Integrate with the forward integrator, keeping its autograd graph; with
        ``config.check_backward`` the backward pass raises NonFiniteValue at the first NaN/Inf
        gradient (see the module docstring)."""
        if not problem.config.check_backward:
            return problem.solver.integrate(problem.func, problem.y0, problem.t, problem.config,
                                            keep_dense=problem.keep_dense)
        func = problem.func

        def checked_func(t: Tensor, y: Tensor) -> Tensor:
            return _FiniteGradient.apply(func(t, y), f"the gradient flowing into func's output at "
                                                     f"t={float(t):.6g}", "backward")

        y0 = _FiniteGradient.apply(problem.y0, "dL/dy0", "backward")
        solution = problem.solver.integrate(checked_func, y0, problem.t, problem.config,
                                            keep_dense=problem.keep_dense)
        solution.ys = _FiniteGradient.apply(solution.ys, "the incoming gradient dL/dys (from the loss, "
                                                         "upstream of odeint)", "incoming gradient")
        return solution


class _FiniteGradient(torch.autograd.Function):
    """Identity whose backward raises NonFiniteValue if the gradient holds NaN/Inf."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, what: str, phase: str) -> Tensor:
        ctx.what, ctx.phase = what, phase
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        require_finite(grad, ctx.what, phase=ctx.phase)
        return grad, None, None


