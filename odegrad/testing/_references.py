"""Exact references: the solution of linear and affine autonomous ODEs and its gradients.

``y' = A y + b`` has the flow ``y(t) = e^{A(t−t0)} y0 + φ(A(t−t0)) (t−t0) b``; both terms come out
of one matrix exponential of the augmented matrix ``[[A, b], [0, 0]] (t − t0)``. The exponential is
``torch.linalg.matrix_exp``, whose autograd is the exact Fréchet derivative, so differentiating
:func:`linear_solution` gives exact gradients with respect to ``A``, ``b``, ``y0`` and ``t``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import InvalidInput
from ._fields import LinearField


def linear_solution(A: Tensor, y0: Tensor, t: Tensor, b: Tensor | None = None) -> Tensor:
    """Exact solution of ``dy/dt = y Aᵀ + b`` (row-vector convention of :class:`LinearField`).

    Args:
        A: ``Tensor[d, d]``.
        y0: ``Tensor[*batch, d]``.
        t: ``Tensor[T]`` output times (any order; ``t[0]`` is the initial time).
        b: optional ``Tensor[d]``.

    Returns:
        ``Tensor[T, *batch, d]``, differentiable in ``A``, ``b``, ``y0`` and ``t``.
    """
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise InvalidInput("A", A, "a square matrix [d, d]")
    d = A.shape[0]
    if y0.dim() < 1 or y0.shape[-1] != d:
        raise InvalidInput("y0", y0, f"a tensor [*batch, {d}] matching A")
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidInput("t", t, "a non-empty 1-D tensor of times")
    if b is not None and tuple(b.shape) != (d,):
        raise InvalidInput("b", b, f"a vector of shape ({d},)")
    augmented = A.new_zeros(d + 1, d + 1)
    augmented = augmented.index_put((torch.arange(d).unsqueeze(1), torch.arange(d)), A)
    if b is not None:
        augmented = augmented.index_put((torch.arange(d), torch.full((d,), d)), b)
    dt = (t - t[0]).to(A.dtype)
    flows = torch.linalg.matrix_exp(dt.reshape(-1, 1, 1) * augmented)      # [T, d+1, d+1]
    y_aug = torch.cat([y0, y0.new_ones(*y0.shape[:-1], 1)], dim=-1)          # [*batch, d+1]
    ys = torch.einsum("tij,...j->t...i", flows, y_aug)
    return ys[..., :d]


def linear_gradients(A: Tensor, y0: Tensor, t: Tensor, loss: Callable[[Tensor], Tensor],
                     b: Tensor | None = None) -> dict[str, Tensor]:
    """Exact gradients of ``loss(linear_solution(A, y0, t, b))``.

    Returns:
        ``{"y0": [*batch, d], "A": [d, d], "t": [T]}`` plus ``"b": [d]`` when ``b`` is given.
    """
    leaves = {"y0": y0, "A": A, "t": t}
    if b is not None:
        leaves["b"] = b
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
    value = loss(linear_solution(leaves["A"], leaves["y0"], leaves["t"], leaves.get("b")))
    grads = torch.autograd.grad(value, tuple(leaves.values()))
    return dict(zip(leaves, grads))


def reference_solution(field, y0: Tensor, t: Tensor) -> Tensor:
    """Exact solution for a :class:`~odegrad.testing.LinearField` (differentiable in its
    parameters, ``y0`` and ``t``); ``Tensor[T, *y0.shape]``."""
    if not isinstance(field, LinearField):
        raise InvalidInput("field", type(field).__name__, "a LinearField (the only field with an exact solution)")
    return linear_solution(field.A, y0, t, field.b)
