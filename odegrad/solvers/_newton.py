"""Simplified Newton iterations for the implicit stages ``Y = ψ + s·f(t, Y)``, and the gradient of
a converged stage by the implicit function theorem.

Newton (Hairer & Wanner, Solving ODEs II, IV.8): the iteration matrix ``M = I − s·J`` is factored
once and reused across stages and steps; the rate θ = ‖Δ_k‖/‖Δ_{k−1}‖ is watched, the iteration
stops when ``θ/(1 − θ)·‖Δ_k‖ ≤ tol`` (‖·‖ the step-error norm, in tolerance units) and fails when
θ ≥ 1 or when the iterations left cannot reach the tolerance at that rate. Every decision is in
:func:`simplified_newton`, which returns a :class:`NewtonResult` with a ``converged`` flag.

Gradient: a converged stage ``Y*`` solves ``r(Y, inputs) = Y − ψ − s·f(t, Y) = 0``, so
``dY/d inputs = −(∂r/∂Y)⁻¹ ∂r/∂inputs``. :func:`implicit_stage` returns ``Y*`` carrying exactly that
derivative: the backward pass solves ``(I − s·J(Y*))ᵀ x = g`` by GMRES (vector–Jacobian products of
func at Y*, preconditioned by the transposed factorization used by Newton) instead of
backpropagating through the iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._jacobian import IterationMatrix
from ._krylov import gmres


@dataclass
class NewtonResult:
    """Outcome of one stage's Newton iteration.

    Attributes:
        y: the last iterate, shaped like the state.
        converged: whether the stopping test passed (else the step must be rejected).
        iterations: Newton iterations spent.
        rate: the largest contraction rate θ observed (0 when a single iteration converged).
        eta: the last ``θ/(1 − θ)``, the next solve's first-iteration estimate.
    """

    y: Tensor
    converged: bool
    iterations: int
    rate: float
    eta: float = 1.0


def simplified_newton(residual: Callable[[Tensor], Tensor], guess: Tensor, matrix: IterationMatrix,
                      norm: Callable[[Tensor], float], tol: float, max_iterations: int,
                      eta: float = 1.0) -> NewtonResult:
    """Solve ``residual(Y) = 0`` from ``guess`` with ``Y ← Y − M⁻¹ residual(Y)``.

    Args:
        residual: ``Y − ψ − s·f(t, Y)`` (state shape in, state shape out).
        guess: the first iterate.
        matrix: the factored iteration matrix ``M = I − s·J``.
        norm: the size of a Newton update in tolerance units (a float).
        tol: stop when the predicted distance to the solution is below this (tolerance units).
        max_iterations: cap on iterations (≥ 1).
        eta: ``θ/(1 − θ)`` of the previous solve (the first iteration has no rate of its own;
            Hairer–Wanner use ``max(η_old, ε)^0.8``).
    """
    y = guess
    previous = math.nan
    rate = 0.0
    eta = max(eta, torch.finfo(guess.dtype).eps) ** 0.8
    for k in range(1, max_iterations + 1):
        delta = matrix.solve(-residual(y))
        y = y + delta
        size = norm(delta)
        if not math.isfinite(size):
            return NewtonResult(y, False, k, math.inf)
        if k > 1:
            theta = size / previous
            rate = max(rate, theta)
            if theta >= 1.0:
                return NewtonResult(y, False, k, rate)
            eta = theta / (1.0 - theta)
            if theta ** (max_iterations - k) / (1.0 - theta) * size > tol:
                return NewtonResult(y, False, k, rate)
        if eta * size <= tol:
            return NewtonResult(y, True, k, rate, eta)
        previous = size
    return NewtonResult(y, False, max_iterations, rate)


def implicit_stage(y_star: Tensor, residual_graph: Tensor, func: Any, t: Any, scale: Any,
                   matrix: IterationMatrix) -> Tensor:
    """``y_star`` (the converged stage, detached) carrying the implicit-function-theorem derivative.

    Args:
        y_star: the converged stage ``Y*``.
        residual_graph: ``Y* − ψ − s·f(t, Y*)`` evaluated with ``Y*`` detached and the autograd
            graph to everything ψ and f depend on (y0, earlier stages, func's parameters).
        func, t, scale: the stage's func, time and ``s`` (for ``Jᵀ`` products in the backward pass).
        matrix: Newton's iteration matrix (its transposed factorization preconditions the solve).
    """
    return y_star + _ImplicitStage.apply(residual_graph, y_star, func, t, scale,
                                         matrix.transposed_preconditioner())


class _ImplicitStage(torch.autograd.Function):
    """Forward: zeros (the stage value is added outside). Backward: ``−(I − s·J(Y*))⁻ᵀ g``."""

    @staticmethod
    def forward(ctx: Any, residual: Tensor, y_star: Tensor, func: Any, t: Any, scale: Any,
                precondition: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.y_star, ctx.func, ctx.t, ctx.scale = y_star.detach(), func, t, scale
        ctx.precondition = precondition
        return torch.zeros_like(residual)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Any, ...]:
        y = ctx.y_star.clone().requires_grad_(True)
        with torch.enable_grad():
            f = ctx.func(ctx.t, y)
        scale = ctx.scale.detach() if isinstance(ctx.scale, Tensor) else ctx.scale

        def transposed(v: Tensor) -> Tensor:
            (jtv,) = torch.autograd.grad(f, y, v.view_as(y), retain_graph=True, allow_unused=True)
            return v if jtv is None else v - scale * jtv.reshape(-1)

        def precondition(v: Tensor) -> Tensor:
            return ctx.precondition(v.view_as(y)).reshape(-1)

        x, _ = gmres(transposed, grad.reshape(-1), precondition=precondition)
        return (-x.view_as(grad), None, None, None, None, None)
