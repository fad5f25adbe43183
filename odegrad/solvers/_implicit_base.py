"""What every implicit step solver shares: its options (Jacobian mode, Newton tolerance and
iteration cap), its cost counters, the per-solve workspace carried in the step state (the
iteration matrix and Newton's error scale) and the cubic Hermite dense output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_positive
from ._base import Func, IntegrationConfig, Solution, StepResult
from ._hermite import hermite, hermite_derivative
from ._jacobian import JACOBIAN_MODES, ImplicitCounts, IterationMatrix, jacobian_structure
from ._step_solver import StepSolver

DEFAULT_NEWTON_TOL = 0.03
"""Newton stops when the predicted distance to the stage solution is below this many tolerance
units (Hairer–Wanner's κ·1, κ between 0.01 and 0.1)."""
JACOBIAN_REFRESH_RATE = 0.05
"""A Newton contraction rate above this marks the Jacobian stale: it is formed again at the next step."""


@dataclass
class Workspace:
    """One solve's mutable implicit-method data (rejected steps keep it).

    Attributes:
        matrix: the Jacobian and its factored iteration matrix.
        rtol, atol, norm: the solve's tolerances and error norm (Newton's convergence test).
        eta: Newton's last ``θ/(1 − θ)`` (the next stage's first-iteration estimate).
    """

    matrix: IterationMatrix
    rtol: float
    atol: float
    norm: Any
    eta: float = 1.0

    def size(self, delta: Tensor, y: Tensor) -> float:
        """``norm(delta / (atol + rtol·|y|))`` as a float: a Newton update in tolerance units."""
        scale = (self.atol + self.rtol * y.abs()).clamp_min(torch.finfo(y.dtype).tiny)  # atol = 0 at y = 0
        return float(self.norm(delta / scale))


class ImplicitSolver(StepSolver):
    """Base of the implicit step solvers (ESDIRK and Rosenbrock methods). The step state is the
    derivative at the step start, as for explicit RK; the Jacobian, its factorization and Newton's
    tolerances live in one :class:`Workspace` per solve (made by :meth:`integrate`, restored after
    it, so a solve nested in another keeps its own).

    Args:
        jacobian: how the Jacobian of func is formed and solved with: ``"dense"`` (default:
            ``torch.func.jacrev`` + dense LU), ``"batch"`` (one block per batch entry, entries
            independent), ``"fd"`` (finite differences: any func) or ``"krylov"`` (matrix-free
            GMRES; large states). See :mod:`odegrad.solvers._jacobian`.
        newton_tol: Newton's stopping tolerance in tolerance units (> 0).
        max_newton_iterations: iterations before a stage counts as failed (≥ 1): the step is
            rejected and h shrinks.

    Raises:
        InvalidInput: an unknown ``jacobian`` mode, ``newton_tol`` ≤ 0 or ``max_newton_iterations`` < 1.
    """

    traceable = False  # Newton's iteration count and the Jacobian refresh read tensor values

    supports_autograd_func = True

    def __init__(self, jacobian: str = "dense", newton_tol: float = DEFAULT_NEWTON_TOL,
                 max_newton_iterations: int = 10):
        self.jacobian = check_choice(f"{type(self).__name__} jacobian", jacobian, JACOBIAN_MODES)
        self.newton_tol = check_positive(f"{type(self).__name__} newton_tol", newton_tol)
        self.max_newton_iterations = check_int(f"{type(self).__name__} max_newton_iterations",
                                               max_newton_iterations, low=1)
        self.counts = ImplicitCounts()
        self._settings = IntegrationConfig()
        self._workspace: Workspace | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, jacobian={self.jacobian!r}, "
                f"newton_tol={self.newton_tol}, max_newton_iterations={self.max_newton_iterations})")

    def cost_snapshot(self) -> dict[str, int]:
        """The Jacobian, LU, Newton iteration and Newton failure counters (``Stats`` fields)."""
        return self.counts.snapshot()

    def integrate(self, func: Func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        """As :meth:`StepSolver.integrate`, with a fresh workspace; Newton's convergence test uses
        ``config``'s tolerances and norm."""
        outer = self._settings, self._workspace
        self._settings, self._workspace = config, None
        try:
            return super().integrate(func, y0, t, config, keep_dense=keep_dense)
        finally:
            self._settings, self._workspace = outer

    def workspace(self, func: Func) -> Workspace:
        """This solve's workspace (made on first use from ``func``'s declared structure)."""
        if self._workspace is None:
            controller = self._settings.controller
            rtol, atol = controller.scalar_tolerances()
            matrix = IterationMatrix(self.jacobian, self.counts, jacobian_structure(func))
            self._workspace = Workspace(matrix, rtol, atol, controller.norm)
        return self._workspace

    def init(self, func: Func, t0: Any, y0: Tensor) -> Tensor:
        """``func(t0, y0)``, the first stage of the first step (the Jacobian is formed at a step)."""
        self.workspace(func)
        return func(t0, y0)

    def failed(self, y0: Tensor, state: Tensor) -> StepResult:
        """The result of a step whose Newton iteration failed: not converged (the controller
        rejects it and shrinks h), the Jacobian marked stale."""
        self.counts.newton_failures += 1
        self._workspace.matrix.stale = True
        return StepResult(y0, torch.zeros_like(y0), None, state, None, converged=False)

    def interpolate(self, dense_info: Any, t0: Any, h: Any, t: Any) -> Tensor:
        """Cubic Hermite interpolant of the step through its ends and end derivatives."""
        return hermite(dense_info, t0, h, t)

    def interpolate_derivative(self, dense_info: Any, t0: Any, h: Any, t: Any) -> Tensor:
        """d/dt of :meth:`interpolate`."""
        return hermite_derivative(dense_info, t0, h, t)
