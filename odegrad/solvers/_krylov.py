"""Restarted GMRES (Saad & Schultz 1986) on flat vectors with an optional right preconditioner:
the matrix-free linear solver of the implicit methods' Newton–Krylov mode and of the
implicit-function-theorem gradients of their stages."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import LinearSolveFailure

LinearMap = Callable[[Tensor], Tensor]


def default_tolerance(dtype: torch.dtype) -> float:
    """Backward error GMRES aims for in ``dtype``: ε^(2/3) (4e-11 in float64, 2e-5 in float32)."""
    return torch.finfo(dtype).eps ** (2 / 3)


def gmres(matvec: LinearMap, b: Tensor, *, precondition: LinearMap | None = None, tol: float | None = None,
          restart: int = 30, max_iterations: int | None = None) -> tuple[Tensor, int]:
    """Solve ``A x = b`` for ``x`` given only ``matvec(v) = A v`` (flat ``Tensor[n]``).

    Converged when the normwise backward error ``‖b − A x‖ / (‖A‖·‖x‖ + ‖b‖)`` (‖A‖ estimated
    from the Arnoldi columns, x in the preconditioned variable) is at most ``tol``: the accuracy
    a backward-stable solver reaches also on ill-conditioned (very stiff) systems.

    Args:
        matvec: the linear map A on ``Tensor[n]``.
        b: right-hand side, ``Tensor[n]``.
        precondition: ``P⁻¹`` (a map close to ``A⁻¹``) applied on the right: GMRES solves
            ``A P⁻¹ u = b`` and returns ``x = P⁻¹ u``. None: no preconditioner.
        tol: backward error to reach (None: :func:`default_tolerance`).
        restart: Krylov dimension before a restart (at most n).
        max_iterations: cap on matrix-vector products (None: ``max(2 n, 50)``).

    Returns:
        ``(x, iterations)``: the solution ``Tensor[n]`` and the matrix–vector products spent.

    Raises:
        LinearSolveFailure: the backward error did not reach ``tol`` within ``max_iterations``
            or stopped decreasing above it.
    """
    n = b.numel()
    tol = default_tolerance(b.dtype) if tol is None else tol
    cap = max(2 * n, 50) if max_iterations is None else max_iterations
    apply_p = precondition or (lambda v: v)
    b_norm = float(torch.linalg.vector_norm(b))
    x, u = torch.zeros_like(b), torch.zeros_like(b)
    if b_norm == 0.0:
        return x, 0
    iterations, a_norm, previous = 0, 0.0, math.inf
    residual = b
    while True:
        beta = float(torch.linalg.vector_norm(residual))
        backward_error = beta / (a_norm * float(torch.linalg.vector_norm(u)) + b_norm)
        if backward_error <= tol:
            return x, iterations
        if iterations >= cap or beta > 0.5 * previous:  # capped, or a restart gained little
            raise LinearSolveFailure(f"GMRES reached a backward error of {backward_error:.3g} "
                                     f"(wanted {tol:.3g}) after {iterations} iterations on a system of "
                                     f"size {n}")
        previous = beta
        basis = [residual / beta]
        hessenberg = torch.zeros(restart + 1, restart, dtype=torch.float64)
        size = 0
        for j in range(min(restart, n, cap - iterations)):  # the Krylov space has at most n dimensions
            w = matvec(apply_p(basis[j]))
            iterations += 1
            for _ in range(2):  # Gram–Schmidt twice: orthogonal to rounding also for stiff systems
                for i in range(j + 1):
                    projection = float(torch.dot(w, basis[i]))
                    hessenberg[i, j] += projection
                    w = w - projection * basis[i]
            hessenberg[j + 1, j] = float(torch.linalg.vector_norm(w))
            a_norm = max(a_norm, float(torch.linalg.vector_norm(hessenberg[:j + 2, j])))
            size = j + 1
            rhs = torch.zeros(size + 1, dtype=torch.float64)
            rhs[0] = beta
            coefficients = torch.linalg.lstsq(hessenberg[:size + 1, :size], rhs.unsqueeze(1)).solution[:, 0]
            estimate = float(torch.linalg.vector_norm(hessenberg[:size + 1, :size] @ coefficients - rhs))
            if estimate <= 0.1 * tol * b_norm or hessenberg[j + 1, j] <= 1e-300 * beta:
                break
            basis.append(w / hessenberg[j + 1, j].item())
        update = sum(float(c) * v for c, v in zip(coefficients, basis[:size]))
        u = u + update
        x = x + apply_p(update)
        residual = b - matvec(x)
