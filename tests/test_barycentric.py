"""Chebyshev points of the first kind and barycentric interpolation (odegrad.gradients._barycentric)."""

import math

import pytest
import torch

from odegrad.errors import InvalidInput
from odegrad.gradients._barycentric import (
    ChebyshevInterpolant,
    barycentric_interpolate,
    chebyshev_extrema,
    chebyshev_nodes,
    chebyshev_weights,
)

F64 = torch.float64


def sample(fn, n, a, b):
    return fn(torch.tensor(ChebyshevInterpolant.points(n, a, b), dtype=F64))


def max_error(fn, n, a, b, points=2001):
    interpolant = ChebyshevInterpolant(a, b, sample(fn, n, a, b))
    x = torch.linspace(a, b, points, dtype=F64)
    return float((interpolant(x) - fn(x)).abs().max())


def test_nodes_are_first_kind_roots_of_chebyshev_polynomial():
    n = 9
    x = chebyshev_nodes(n)
    assert x.shape == (n,)
    assert torch.all(x[1:] < x[:-1])
    assert float(torch.cos(n * torch.arccos(x)).abs().max()) < 1e-14  # T_n(x_j) = 0


def test_weights_match_the_nodes():
    # w_j ∝ 1 / Π_{k≠j} (x_j − x_k) is the definition; the closed form must agree up to one factor.
    n = 12
    x = chebyshev_nodes(n)
    diff = x[:, None] - x[None, :] + torch.eye(n, dtype=F64)
    exact = 1.0 / diff.prod(dim=1)
    ratio = chebyshev_weights(n) / exact
    assert float((ratio / ratio[0] - 1).abs().max()) < 1e-12


def test_extrema_interleave_nodes():
    n = 7
    x, e = chebyshev_nodes(n), chebyshev_extrema(n)
    assert e.shape == (n + 1,) and float(e[0]) == 1.0 and float(e[-1]) == -1.0
    assert torch.all(e[:-1] > x) and torch.all(x > e[1:])


@pytest.mark.parametrize("n", [1, 5, 12])
def test_polynomial_of_degree_below_n_is_reproduced_to_machine_precision(n):
    coefficients = torch.linspace(-1.0, 2.0, n, dtype=F64)

    def poly(x):
        return sum(c * x ** k for k, c in enumerate(coefficients))

    scale = float(poly(torch.tensor(5.0, dtype=F64)).abs())
    assert max_error(poly, n, 2.0, 5.0) <= 1e-14 * max(scale, 1.0)


def test_exponential_converges_to_machine_precision():
    errors = [max_error(torch.exp, n, 0.0, 2.0) for n in (4, 8, 16)]
    assert errors[0] > errors[1] > 1e-12
    assert errors[2] < 5e-15 * math.exp(2.0)


def test_runge_function_converges_geometrically_on_chebyshev_points():
    def runge(x):
        return 1.0 / (1.0 + 25.0 * x ** 2)

    errors = [max_error(runge, n, -1.0, 1.0) for n in (16, 32, 64, 128)]
    for coarse, fine in zip(errors, errors[1:]):
        assert fine < coarse / 10
    assert errors[-1] < 1e-8
    # equispaced interpolation of the same function diverges (the Runge phenomenon)
    n = 32
    equi = torch.linspace(-1.0, 1.0, n, dtype=F64)
    diff = equi[:, None] - equi[None, :] + torch.eye(n, dtype=F64)
    weights = 1.0 / diff.prod(dim=1)
    x = torch.linspace(-1.0, 1.0, 2001, dtype=F64)
    equi_error = float((barycentric_interpolate(x, equi, weights, runge(equi)) - runge(x)).abs().max())
    assert equi_error > 100 * errors[1]


def test_exact_at_nodes_and_float_path_matches_tensor_path():
    a, b = 3.0, 1.0  # reversed interval
    values = torch.randn(6, 2, 3, dtype=F64)
    interpolant = ChebyshevInterpolant(a, b, values)
    nodes = ChebyshevInterpolant.points(6, a, b)
    for j, node in enumerate(nodes):  # a mapped time may round-trip to the node within an ulp
        assert torch.allclose(interpolant(node), values[j], rtol=0, atol=1e-13)
        assert torch.allclose(interpolant(torch.tensor(node, dtype=F64)), values[j], rtol=0, atol=1e-13)
    # on the reference interval a node is hit exactly: no division by zero, the value itself
    x = chebyshev_nodes(6)
    assert torch.equal(barycentric_interpolate(x, x, chebyshev_weights(6), values), values)
    x = torch.linspace(b, a, 11, dtype=F64)
    batched = interpolant(x)
    assert batched.shape == (11, 2, 3)
    for i, xi in enumerate(x.tolist()):
        assert torch.allclose(interpolant(xi), batched[i], rtol=1e-13, atol=1e-13)


def test_float32_values_keep_float32():
    values = torch.randn(5, 4)
    interpolant = ChebyshevInterpolant(0.0, 1.0, values)
    assert interpolant(0.3).dtype == torch.float32
    assert interpolant(torch.tensor([0.1, 0.2])).shape == (2, 4)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_node_count(bad):
    with pytest.raises(InvalidInput, match="n"):
        chebyshev_nodes(bad)


def test_bad_shapes_and_interval():
    nodes, weights = chebyshev_nodes(4), chebyshev_weights(4)
    with pytest.raises(InvalidInput, match="values shape"):
        barycentric_interpolate(torch.tensor(0.0), nodes, weights, torch.zeros(3, 2))
    with pytest.raises(InvalidInput, match="nodes/weights"):
        barycentric_interpolate(torch.tensor(0.0), nodes, weights[:3], torch.zeros(4))
    with pytest.raises(InvalidInput, match="interval"):
        ChebyshevInterpolant(1.0, 1.0, torch.zeros(4))
