"""Chebyshev points of the first kind and stable barycentric Lagrange interpolation
(Berrut & Trefethen, "Barycentric Lagrange interpolation", SIAM Review 46(3), 2004).

On [-1, 1] the n Chebyshev points of the first kind are x_j = cos((2j+1)π/(2n)), j = 0..n-1,
and their barycentric weights (up to a common factor, which cancels) are
w_j = (-1)^j sin((2j+1)π/(2n)). The weights are invariant under the affine map to [a, b], so the
interpolant on any interval uses the same weights with the mapped coordinate

    p(x) = Σ_j w_j f_j / (x - x_j)  /  Σ_j w_j / (x - x_j)        (second, "true" barycentric form),

which is forward stable for Chebyshev points and exact at the nodes. Nodes and weights must come
from the same family: the IRDM reference pairs first-kind nodes with other weights and loses ten
digits (see docs/algorithms.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_int
from ..errors import InvalidInput


def chebyshev_nodes(n: int, *, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> Tensor:
    """First-kind Chebyshev points on [-1, 1], ``Tensor[n]``, decreasing from near 1 to near -1."""
    check_int("n (Chebyshev nodes)", n, low=1)
    j = torch.arange(n, dtype=torch.float64, device=device)
    return torch.cos((2 * j + 1) * math.pi / (2 * n)).to(dtype)


def chebyshev_weights(n: int, *, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> Tensor:
    """Barycentric weights matching :func:`chebyshev_nodes`, ``Tensor[n]``: (-1)^j sin((2j+1)π/(2n))."""
    check_int("n (Chebyshev nodes)", n, low=1)
    j = torch.arange(n, dtype=torch.float64, device=device)
    sign = 1.0 - 2.0 * (j % 2)
    return (sign * torch.sin((2 * j + 1) * math.pi / (2 * n))).to(dtype)


def chebyshev_extrema(n: int, *, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> Tensor:
    """Second-kind points cos(kπ/n), k = 0..n, ``Tensor[n + 1]``: they interleave the n first-kind
    points (and include ±1), which makes them natural held-out points for checking an interpolant."""
    check_int("n (Chebyshev nodes)", n, low=1)
    k = torch.arange(n + 1, dtype=torch.float64, device=device)
    return torch.cos(k * math.pi / n).to(dtype)


def to_interval(x: Tensor, a: float, b: float) -> Tensor:
    """Map points of [-1, 1] affinely to [a, b] (a > b allowed): a at x = -1, b at x = 1."""
    return 0.5 * (a + b) + 0.5 * (b - a) * x


def from_interval(t: Tensor, a: float, b: float) -> Tensor:
    """Inverse of :func:`to_interval`."""
    return (2.0 * t - (a + b)) / (b - a)


def barycentric_matrix(x: Tensor, nodes: Tensor, weights: Tensor) -> Tensor:
    """Row m holds the Lagrange basis values ℓ_j(x_m), ``Tensor[len(x), len(nodes)]``, so that
    ``barycentric_matrix(x, nodes, weights) @ values`` interpolates. ``x`` is 0-d or 1-D; ``nodes``
    and ``weights`` are ``[n]``, or ``[len(x), n]`` for nodes of their own per point (zero
    weights pad rows to one length).

    Points that coincide with a node get the unit row of that node (no division by zero); the
    choice is made with tensor operations only, so there is no host synchronisation."""
    x = x.reshape(-1, 1).to(nodes.dtype)
    diff = x - nodes
    exact = diff == 0
    c = weights / torch.where(exact, torch.ones_like(diff), diff)
    c = c / c.sum(dim=1, keepdim=True)
    return torch.where(exact.any(dim=1, keepdim=True), exact.to(c.dtype), c)


def barycentric_interpolate(x: Tensor, nodes: Tensor, weights: Tensor, values: Tensor) -> Tensor:
    """Evaluate the interpolant through ``(nodes[j], values[j])`` at ``x``.

    Args:
        x: ``Tensor[m]`` (or 0-d) evaluation points, in the coordinate of ``nodes``.
        nodes, weights: ``Tensor[n]``, e.g. :func:`chebyshev_nodes` and :func:`chebyshev_weights`.
        values: ``Tensor[n, *shape]``.

    Returns:
        ``Tensor[m, *shape]`` (``Tensor[*shape]`` for a 0-d ``x``), in the dtype of ``values``.
    """
    if nodes.dim() != 1 or weights.shape != nodes.shape:
        raise InvalidInput("nodes/weights shape", f"{tuple(nodes.shape)}/{tuple(weights.shape)}",
                           "two 1-D tensors of equal length")
    if values.dim() < 1 or values.shape[0] != nodes.shape[0]:
        raise InvalidInput("values shape", str(tuple(values.shape)),
                           f"[{nodes.shape[0]}, ...] (one value per node)")
    basis = barycentric_matrix(x, nodes, weights).to(values.dtype)
    out = (basis @ values.reshape(values.shape[0], -1)).reshape(-1, *values.shape[1:])
    return out[0] if x.dim() == 0 else out


class ChebyshevInterpolant:
    """Polynomial interpolant of a function sampled at the n first-kind Chebyshev points of [a, b].

    Args:
        a, b: interval ends (a > b allowed, e.g. for reverse-time solves).
        values: ``Tensor[n, *shape]`` samples at ``ChebyshevInterpolant.points(n, a, b)``.
    """

    def __init__(self, a: float, b: float, values: Tensor):
        if not a != b:
            raise InvalidInput("interval", (a, b), "two distinct finite ends a != b")
        self.a, self.b = float(a), float(b)
        self.values = values
        self.shape = values.shape[1:]
        self._flat = values.reshape(values.shape[0], -1)
        n = values.shape[0]
        nodes = chebyshev_nodes(n)  # computed on the host: the floats tested for an exact hit
        self._node_index = {node: j for j, node in enumerate(nodes.tolist())}
        self.nodes = nodes.to(values.device)
        self.weights = chebyshev_weights(n).to(values.device)

    @staticmethod
    def points(n: int, a: float, b: float) -> list[float]:
        """The n sample times on [a, b] (in the order of the values)."""
        return to_interval(chebyshev_nodes(n), a, b).tolist()

    @property
    def n(self) -> int:
        return self.values.shape[0]

    def __call__(self, t: Tensor | float) -> Tensor:
        """Interpolated value at ``t``: a float or 0-d tensor gives ``Tensor[*shape]``, a
        ``Tensor[m]`` gives ``Tensor[m, *shape]``."""
        if isinstance(t, float):
            return self._at(t)
        t = torch.as_tensor(t, dtype=torch.float64, device=self.values.device)
        return barycentric_interpolate(from_interval(t, self.a, self.b), self.nodes, self.weights,
                                       self.values)

    def _at(self, t: float) -> Tensor:
        # One point: the basis from the host float with a few device operations and one
        # matrix-vector product — no host-to-device copy, which on a GPU would synchronise.
        x = (2.0 * t - (self.a + self.b)) / (self.b - self.a)
        exact = self._node_index.get(x)
        if exact is not None:
            return self.values[exact]
        basis = self.weights / (x - self.nodes)
        basis = basis / basis.sum()
        return (basis.to(self.values.dtype) @ self._flat).view(self.shape)
