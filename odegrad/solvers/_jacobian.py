"""Jacobians of ``func`` and solves with the iteration matrix ``I − s·J`` of the implicit methods.

Four ways to form J (the ``jacobian=`` option of every implicit method):

* ``"dense"`` (default) — ``torch.func.jacrev`` over the whole flat state, ``J: Tensor[n, n]``,
  dense LU (``torch.linalg.lu_factor`` / ``lu_solve``). Best up to a few thousand state entries.
* ``"batch"`` — the batch entries (first dimension of the state) are independent: one block per
  entry, ``J: Tensor[B, m, m]`` from m vector–Jacobian products (not B·m), batched LU. A func that
  couples the entries is detected (one Jacobian–vector product per Jacobian) and refused.
* ``"fd"`` — dense, by forward finite differences (n evaluations of func): works for any func,
  including ones ``torch.func`` cannot transform.
* ``"krylov"`` — matrix-free: GMRES with finite-difference Jacobian–vector products at the point
  the Jacobian was last "formed". No n×n memory; for large states.

A func may declare a :class:`JacobianStructure` (attribute ``jacobian_structure``): the adjoint
systems of the gradient backends do, since they call ``torch.autograd.grad`` (so their Jacobian is
formed by finite differences) and end in a quadrature tail (the parameter-gradient integral, whose
derivative does not depend on it): J's columns stop before the tail (``n × k`` entries formed),
and the iteration matrix, block lower triangular, is solved exactly by blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidInput, JacobianUnavailable
from ._krylov import gmres

JACOBIAN_MODES = ("dense", "batch", "fd", "krylov")
"""The values of the implicit methods' ``jacobian=`` option (see the module docstring)."""


@dataclass(frozen=True)
class JacobianStructure:
    """What a func declares about its Jacobian (as its attribute ``jacobian_structure``).

    Attributes:
        implicit_size: the leading flat state entries whose Jacobian enters the iteration matrix;
            the entries after them are a quadrature tail (their derivative does not depend on them).
        finite_differences: form the Jacobian by finite differences (func calls
            ``torch.autograd.grad``, which ``torch.func`` transforms cannot run).
    """

    implicit_size: int
    finite_differences: bool = True


def jacobian_structure(func: Any) -> JacobianStructure | None:
    """The :class:`JacobianStructure` declared by ``func`` or by a func it wraps (``.func``)."""
    while func is not None:
        declared = getattr(func, "jacobian_structure", None)
        if isinstance(declared, JacobianStructure):
            return declared
        func = getattr(func, "func", None)
    return None


@dataclass
class ImplicitCounts:
    """Cost counters of the implicit methods (summed over solves; ``Solution.stats`` reports each
    solve's share)."""

    jacobian_evals: int = 0
    lu_factorizations: int = 0
    newton_iterations: int = 0
    newton_failures: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters by name (the ``Stats`` fields of the same names)."""
        return dict(self.__dict__)


class IterationMatrix:
    """``M = I − s·J(t, y)`` for one solve: J formed at a point, M factored for a scale s, and
    solves with M and Mᵀ. Shapes: states ``Tensor[*shape]`` (``[B, *rest]`` in ``"batch"`` mode).

    Args:
        mode: one of :data:`JACOBIAN_MODES`.
        counts: the solver's counters.
        structure: what func declares (None: nothing).
    """

    def __init__(self, mode: str, counts: ImplicitCounts, structure: JacobianStructure | None = None):
        self.mode = "fd" if structure is not None and mode in ("dense", "batch") else mode
        self.counts = counts
        self.structure = structure
        self.jac: Tensor | None = None
        self.point: tuple[Any, Tensor, Tensor] | None = None  # (func, t, y) of J, f(t, y)
        self.f_point: Tensor | None = None
        self.scale: Any = None
        self.lu: tuple[Tensor, Tensor] | None = None
        self.stale = True

    # ---- forming J -------------------------------------------------------------------------

    def form(self, func: Any, t: Any, y: Tensor, *, differentiable: bool = False) -> None:
        """Form J at ``(t, y)`` and drop the factorization. ``differentiable``: keep J's autograd
        graph to y and func's parameters (Rosenbrock steps under direct backprop); else J is
        detached."""
        self.counts.jacobian_evals += 1
        if not differentiable:
            y = y.detach()
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            self.f_point = func(t, y)
            self.point = (func, t, y)
            if self.mode != "krylov":
                jac = self._dense(func, t, y) if self.mode != "batch" else self._blocks(func, t, y)
                self.jac = jac if differentiable else jac.detach()
        self.lu, self.scale, self.stale = None, None, False

    def _implicit_size(self, y: Tensor) -> int:
        return y.numel() if self.structure is None else self.structure.implicit_size

    def _dense(self, func: Any, t: Any, y: Tensor) -> Tensor:
        k = self._implicit_size(y)
        if self.mode == "fd":
            return self._finite_differences(func, t, y, k)
        try:
            return torch.func.jacrev(lambda x: func(t, x.view_as(y)).reshape(-1))(y.reshape(-1))
        except Exception as error:  # noqa: BLE001 - any failure of torch.func means: no Jacobian this way
            raise _unavailable(error) from error

    def _finite_differences(self, func: Any, t: Any, y: Tensor, k: int) -> Tensor:
        """Columns ``∂f/∂y_j`` for the leading ``k`` entries, all rows: ``Tensor[n, k]``."""
        flat, f0 = y.reshape(-1), self.f_point.reshape(-1)
        eps = torch.finfo(y.dtype).eps ** 0.5
        columns = []
        for j in range(k):
            step = eps * max(abs(float(flat[j])), 1.0)
            shifted = flat.clone()
            shifted[j] += step
            columns.append((func(t, shifted.view_as(y)).reshape(-1) - f0) / step)
        return torch.stack(columns, dim=1)

    def _blocks(self, func: Any, t: Any, y: Tensor) -> Tensor:
        if y.dim() < 1:
            raise InvalidInput("jacobian", "'batch' for a 0-dim state", "a state with a batch (first) dimension")
        batch, m = y.shape[0], y[0].numel()
        try:
            # d(Σ_b f_b)/dy_b = df_b/dy_b when entries are independent: m products, not B·m
            jac = torch.func.jacrev(lambda x: func(t, x).reshape(batch, m).sum(0))(y)
            probe = torch.randn_like(y)
            _, coupled = torch.func.jvp(lambda x: func(t, x), (y.detach(),), (probe,))
        except Exception as error:  # noqa: BLE001 - as in _dense
            raise _unavailable(error) from error
        blocks = jac.reshape(m, batch, m).permute(1, 0, 2)
        blockwise = torch.bmm(blocks.detach(), probe.reshape(batch, m, 1)).reshape(batch, m)
        mismatch = (blockwise - coupled.detach().reshape(batch, m)).abs().max()
        if float(mismatch) > 1e-6 * (float(coupled.abs().max()) + 1e-30) + 1e-12:
            raise InvalidInput("jacobian", "'batch' with a func whose output for one batch entry depends "
                               "on another entry", "jacobian='dense' (or 'krylov') for a func that couples "
                               "its batch entries",
                               hint=f"J·v differs from the block-diagonal product by {float(mismatch):.3g}")
        return blocks

    # ---- factoring and solving -------------------------------------------------------------

    def factor(self, scale: Any) -> None:
        """Factor ``M = I − scale·J`` (kept until J or the scale changes)."""
        if self.lu is not None and _same(scale, self.scale):
            return
        self.scale = scale
        if self.mode == "krylov":
            return
        k = self.jac.shape[-1]
        eye = torch.eye(k, dtype=self.jac.dtype, device=self.jac.device)
        head = eye - scale * self.jac[..., :k, :]
        # under autograd, keep M itself: torch.linalg.solve's backward is cheap, lu_factor's is not
        # (~0.1 s per call in torch 2.13, whatever the size)
        self.lu = (head, None) if head.requires_grad else torch.linalg.lu_factor(head)
        self.counts.lu_factorizations += 1

    def solve(self, r: Tensor) -> Tensor:
        """``M⁻¹ r`` (``r`` shaped like the state)."""
        if self.mode == "krylov":
            return gmres(self._matvec, r.reshape(-1), tol=1e-3)[0].view_as(r)
        return self._lu_solve(r, adjoint=False)

    def transposed_preconditioner(self) -> Callable[[Tensor], Tensor]:
        """``r ↦ M⁻ᵀ r`` with the current factorization, kept even when M is refactored later (the
        identity in ``"krylov"`` mode): the preconditioner of the gradient's transposed solves."""
        if self.mode == "krylov":
            return lambda r: r
        lu = tuple(x.detach() for x in self.lu)
        return lambda r: self._lu_solve(r, adjoint=True, lu=lu, jac=self.jac.detach(), scale=self.scale)

    def _lu_solve(self, r: Tensor, adjoint: bool, lu: tuple[Tensor, Tensor] | None = None,
                  jac: Tensor | None = None, scale: Any = None) -> Tensor:
        """``M⁻¹ r`` (or ``M⁻ᵀ r``). With a quadrature tail M is block lower triangular,
        ``[[I − sJ_hh, 0], [−sJ_th, I]]`` (J's columns stop at the head), solved exactly by blocks."""
        lu, pivots = lu or self.lu
        jac = self.jac if jac is None else jac
        scale = self.scale if scale is None else scale
        if self.mode == "batch":
            return _solve(lu, pivots, r.reshape(r.shape[0], -1, 1), adjoint).view_as(r)
        flat = r.reshape(-1)
        k = lu.shape[-1]
        head, tail = flat[:k], flat[k:]
        if not adjoint:
            head = _solve(lu, pivots, head.unsqueeze(1), False)[:, 0]
            if tail.numel():
                tail = tail + scale * (jac[k:] @ head)
        else:
            if tail.numel():
                head = head + scale * (jac[k:].T @ tail)
            head = _solve(lu, pivots, head.unsqueeze(1), True)[:, 0]
        return torch.cat([head, tail]).view_as(r)

    def _matvec(self, v: Tensor) -> Tensor:
        """``(I − s·J) v`` with a forward-difference J·v at the point J was formed."""
        func, t, y = self.point
        norm_v = float(torch.linalg.vector_norm(v))
        if norm_v == 0.0:
            return v
        step = torch.finfo(y.dtype).eps ** 0.5 * (1.0 + float(torch.linalg.vector_norm(y))) / norm_v
        with torch.no_grad():
            jv = (func(t, y + step * v.view_as(y)) - self.f_point).reshape(-1) / step
        return v - self.scale * jv


def _solve(lu: Tensor, pivots: Tensor | None, rhs: Tensor, adjoint: bool) -> Tensor:
    """Solve with an LU factorization, or with the matrix itself (``pivots`` None: autograd)."""
    if pivots is None:
        return torch.linalg.solve(lu.mT if adjoint else lu, rhs)
    return torch.linalg.lu_solve(lu, pivots, rhs, adjoint=adjoint)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return bool(torch.as_tensor(a == b))
    return a == b


def _unavailable(error: Exception) -> JacobianUnavailable:
    return JacobianUnavailable(
        f"the Jacobian of func could not be formed with torch.func ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}); pass jacobian='fd' to the implicit "
        f"method (e.g. odegrad.solvers.Kvaerno5(jacobian='fd'): finite differences, any func) or "
        f"jacobian='krylov' (matrix-free)")
