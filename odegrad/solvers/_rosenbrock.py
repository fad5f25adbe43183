"""Rosenbrock (linearly implicit) methods: one Jacobian and one LU factorization per step, a fixed
number of linear solves, no Newton iterations (Rodas4, Hairer & Wanner, Solving ODEs II, VI.4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidInput
from ._base import Func, StepResult
from ._implicit_base import DEFAULT_NEWTON_TOL, ImplicitSolver
from ._implicit_tableaux import RODAS4, RosenbrockTableau
from ._rk import _add_scaled


class Rosenbrock(ImplicitSolver):
    """A Rosenbrock method with an embedded error estimate (see
    :class:`~odegrad.solvers._implicit_tableaux.RosenbrockTableau` for the stage equations).

    Every step forms J and ∂f/∂t (a forward difference in t) at the step start and factors
    ``I − hγJ`` once; the stages are linear solves with it. Under autograd J keeps its graph, so
    direct backprop differentiates the step exactly. Dense output: cubic Hermite through the step
    ends (the end derivative is the next step's first stage).

    Args:
        tableau: the coefficients (default Rodas4).
        jacobian: ``"dense"``, ``"batch"`` or ``"fd"`` (see :class:`ImplicitSolver`); a Rosenbrock
            method needs the Jacobian itself, so ``"krylov"`` is refused.

    Raises:
        InvalidInput: ``jacobian="krylov"`` or an unknown mode.
    """

    def __init__(self, tableau: RosenbrockTableau = RODAS4, jacobian: str = "dense"):
        if jacobian == "krylov":
            raise InvalidInput(f"{type(self).__name__} jacobian", jacobian, "'dense', 'batch' or 'fd'",
                               hint="a Rosenbrock method's order rests on the exact Jacobian; for "
                                    "matrix-free solves use an ESDIRK method, e.g. Kvaerno5(jacobian='krylov')")
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_estimate = True
        super().__init__(jacobian, DEFAULT_NEWTON_TOL, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, jacobian={self.jacobian!r})"

    def step(self, func: Func, t0: Any, h: Any, y0: Tensor, state: Tensor) -> StepResult:
        """One step of signed size ``h`` from ``(t0, y0)``; ``state`` is ``func(t0, y0)``.

        Returns:
            ``StepResult(y1, error, (y0, y1, f0, f1), f1, None)`` with ``f1 = func(t0 + h, y1)``.
        """
        tab = self.tableau
        matrix = self.workspace(func).matrix
        scale = h * tab.gamma
        matrix.form(func, t0, y0, differentiable=torch.is_grad_enabled())
        matrix.factor(scale)
        f_t = self._time_derivative(func, t0, y0, state)
        increments: list[Tensor] = []
        for i, (alpha, gamma_t, a_row, c_row) in enumerate(zip(tab.alpha, tab.gamma_t, tab.a, tab.c)):
            f_i = state if i == 0 else func(t0 + alpha * h, _add_scaled(y0, 1.0, a_row, increments))
            rhs = _add_scaled(f_i, 1.0 / h, c_row, increments) if i else f_i
            if gamma_t:
                rhs = rhs + f_t * (h * gamma_t)
            increments.append(matrix.solve(rhs) * scale)
        y1 = _add_scaled(y0, 1.0, tab.m, increments)
        error = _add_scaled(None, 1.0, tab.m_error, increments)
        f1 = func(t0 + h, y1)
        return StepResult(y1, error, (y0, y1, state, f1), f1, None)

    @staticmethod
    def _time_derivative(func: Func, t0: Any, y0: Tensor, f0: Tensor) -> Tensor:
        """∂f/∂t at ``(t0, y0)`` by a forward difference (one evaluation of func)."""
        delta = torch.finfo(y0.dtype).eps ** 0.5 * (1.0 + abs(t0))
        return (func(t0 + delta, y0) - f0) / delta


def rodas4(jacobian: str = "dense") -> Rosenbrock:
    """Rodas4 (Hairer–Wanner): a stiffly accurate, L-stable 4(3) Rosenbrock method with 6 stages;
    ``odeint(method="rodas4")`` as a solver object."""
    return Rosenbrock(RODAS4, jacobian=jacobian)
