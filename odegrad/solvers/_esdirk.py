"""ESDIRK methods: Kværnø's adaptive 3(2), 4(3) and 5(4) methods and the fixed-step implicit Euler
and trapezoidal rules, with simplified Newton on every implicit stage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import UnknownName
from ._base import Func, StepResult
from ._implicit_base import DEFAULT_NEWTON_TOL, JACOBIAN_REFRESH_RATE, ImplicitSolver
from ._implicit_tableaux import ESDIRK_TABLEAUX, ESDIRKTableau
from ._newton import implicit_stage, simplified_newton
from ._rk import _add_scaled


class ESDIRK(ImplicitSolver):
    """A stiffly accurate ESDIRK method (explicit first stage, diagonal γ; see
    :class:`~odegrad.solvers._implicit_tableaux.ESDIRKTableau`).

    Each implicit stage ``Y_i = ψ_i + hγ·f(t0 + c_i h, Y_i)`` is solved by simplified Newton with the
    iteration matrix ``I − hγJ`` (J formed at a step start, reused across stages and steps until
    Newton slows down or fails); ``k_i = (Y_i − ψ_i)/(hγ)``. A failed stage rejects the step. Under
    autograd each converged stage is differentiated by the implicit function theorem, not through
    the iterations. Adaptive when the tableau has an embedded estimate; the last stage derivative
    is the next step's first stage (FSAL); dense output is the cubic Hermite interpolant.

    Args:
        tableau: the method's coefficients (a value of ``ESDIRK_TABLEAUX``).
        jacobian, newton_tol, max_newton_iterations: see :class:`ImplicitSolver`.
    """

    def __init__(self, tableau: ESDIRKTableau, jacobian: str = "dense", newton_tol: float = DEFAULT_NEWTON_TOL,
                 max_newton_iterations: int = 10):
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_estimate = tableau.b_error is not None
        super().__init__(jacobian, newton_tol, max_newton_iterations)

    def step(self, func: Func, t0: Any, h: Any, y0: Tensor, state: Tensor) -> StepResult:
        """One step of signed size ``h`` from ``(t0, y0)``; ``state`` is ``func(t0, y0)``.

        Returns:
            ``StepResult(y1, error, (y0, y1, f0, f1), state, None)``, or a not-converged result
            when a stage's Newton iteration failed.
        """
        tab, workspace = self.tableau, self.workspace(func)
        matrix = workspace.matrix
        scale = h * tab.gamma
        if matrix.stale:
            matrix.form(func, t0, y0)
        matrix.factor(scale)
        stages = [state]
        y_stage = y0
        y_detached = y0.detach()
        for c, row, guess_row in zip(tab.c[1:], tab.a[1:], tab.predictor[1:]):
            t_stage = t0 + c * h
            psi = _add_scaled(y0, h, row, stages)
            psi_value = psi.detach()
            guess = psi_value + scale * _add_scaled(None, 1.0, guess_row, [k.detach() for k in stages])

            def residual(y: Tensor, t_stage=t_stage, psi_value=psi_value) -> Tensor:
                return y - psi_value - scale * func(t_stage, y)

            with torch.no_grad():
                result = simplified_newton(residual, guess, matrix, lambda d: workspace.size(d, y_detached),
                                           self.newton_tol, self.max_newton_iterations, workspace.eta)
            self.counts.newton_iterations += result.iterations
            if not result.converged:
                return self.failed(y0, state)
            workspace.eta = result.eta
            if result.rate > JACOBIAN_REFRESH_RATE:
                matrix.stale = True
            y_stage = self._differentiable(result.y, psi, func, t_stage, scale, matrix)
            stages.append((y_stage - psi) / scale)
        error = _add_scaled(None, h, tab.b_error, stages) if self.error_estimate else None
        return StepResult(y_stage, error, (y0, y_stage, stages[0], stages[-1]), stages[-1], None)

    @staticmethod
    def _differentiable(y_star: Tensor, psi: Tensor, func: Func, t: Any, scale: Any, matrix) -> Tensor:
        """The converged stage with its implicit-function-theorem derivative when autograd records
        (one more evaluation of func, with graph), else as it is."""
        if not torch.is_grad_enabled():
            return y_star
        f = func(t, y_star)
        if not (f.requires_grad or psi.requires_grad):
            return y_star
        return implicit_stage(y_star, y_star - psi - scale * f, func, t, scale, matrix)


def esdirk_factory(name: str, description: str) -> Callable[..., ESDIRK]:
    """A public constructor ``name(jacobian=..., newton_tol=..., max_newton_iterations=...)`` of
    the ESDIRK method ``name``, documented by ``description``."""
    def factory(jacobian: str = "dense", newton_tol: float = DEFAULT_NEWTON_TOL,
                max_newton_iterations: int = 10) -> ESDIRK:
        return make_esdirk(name, jacobian=jacobian, newton_tol=newton_tol,
                           max_newton_iterations=max_newton_iterations)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"{description}: ``odeint(method={name!r})`` as a solver object, with the "
                       "implicit-method options of :class:`~odegrad.solvers.ImplicitSolver`.")
    return factory


def make_esdirk(name: str, **options: Any) -> ESDIRK:
    """The ESDIRK method of the registered tableau ``name`` (a key of ``ESDIRK_TABLEAUX``) with
    the solver ``options`` (``jacobian``, ``newton_tol``, ``max_newton_iterations``)."""
    if name not in ESDIRK_TABLEAUX:
        raise UnknownName("name", name, tuple(ESDIRK_TABLEAUX))
    return ESDIRK(ESDIRK_TABLEAUX[name], **options)
