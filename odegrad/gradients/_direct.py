"""``gradient="direct"``: plain autograd through every operation of the forward integrator.

Exact gradients of the discrete solution; memory grows with the number of steps."""

from __future__ import annotations

from ..solvers import Solution
from ._base import Backend, Problem


class Direct(Backend):
    """Backpropagate through the solver's operations (discretise-then-optimise)."""

    name = "direct"

    def solve(self, problem: Problem) -> Solution:
        """Integrate with the forward integrator, keeping its autograd graph."""
        return problem.solver.integrate(problem.func, problem.y0, problem.t, problem.config)
