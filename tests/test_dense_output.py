"""Public dense output (issue 14, item 8): ``solve(..., dense=True)``, ``Solution.evaluate(t)``
and ``Solution.derivative(t)`` at any times in the span, batched, differentiable."""

import math

import pytest
import torch

import odegrad
from odegrad.errors import InvalidInput, UnsupportedCombination

F64 = torch.float64
A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)


def _linear(t, y):
    return y @ A


def _exact(t: float, y0: torch.Tensor) -> torch.Tensor:
    return y0 @ torch.linalg.matrix_exp(A * t)


@pytest.mark.parametrize(("method", "options", "tol"), [("dopri5", None, 1e-7), ("tsit5", None, 1e-7),
                                                        ("rk4", {"step_size": 0.01}, 1e-8),
                                                        ("taylor", {"step_size": 0.01}, 1e-5)])
def test_evaluate_and_derivative_match_the_exact_solution(method, options, tol):
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    sol = odegrad.solve(_linear, y0, torch.tensor([0.0, 2.0], dtype=F64), method=method, options=options,
                        rtol=1e-10, atol=1e-12, dense=True)
    times = torch.tensor([0.0, 0.137, 0.9, 1.5, 2.0], dtype=F64)
    values, slopes = sol.evaluate(times), sol.derivative(times)
    assert values.shape == slopes.shape == (5, 2)
    for i, s in enumerate(times.tolist()):
        assert torch.allclose(values[i], _exact(s, y0), atol=tol)
        assert torch.allclose(slopes[i], _exact(s, y0) @ A, atol=10 * tol)
    assert torch.equal(sol.evaluate(0.9), values[2])  # a float time: one state
    assert sol.evaluate(times.reshape(5, 1)).shape == (5, 1, 2)


def test_dense_output_is_differentiable_under_direct():
    """d y(s)/d y0 = expm(A s)ᵀ (row-vector convention), d y(s)/d s = the derivative."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    sol = odegrad.solve(_linear, y0, torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-10, atol=1e-12, dense=True)
    s = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    value = sol.evaluate(s)
    (d_y0,) = torch.autograd.grad(value[0, 0], y0, retain_graph=True)
    assert torch.allclose(d_y0, torch.linalg.matrix_exp(A * 0.7)[:, 0], atol=1e-8)
    (d_s,) = torch.autograd.grad(value[:, 1].sum(), s)
    assert torch.allclose(d_s, sol.derivative(s.detach())[:, 1].detach(), atol=1e-12)


@pytest.mark.parametrize("gradient", ["backsolve", "gq", "interp"])
def test_adjoint_backends_give_the_dense_values_of_their_forward_solve(gradient):
    """Adjoint backends solve without a graph: the dense output has the values (the same as output
    times would give, since output times never shorten steps) but no graph to y0."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0, 2.0], dtype=F64)
    sol = odegrad.solve(_linear, y0, t, gradient=gradient, dense=True, params=[])
    assert torch.allclose(sol.evaluate(t), sol.ys.detach(), atol=1e-14, rtol=0)
    assert not sol.evaluate(t).requires_grad
    (d_y0,) = torch.autograd.grad(sol.ys[-1, 0], y0)  # the backend's gradients are unchanged
    assert torch.allclose(d_y0, torch.linalg.matrix_exp(A * 2.0)[:, 0], atol=1e-6)


def test_tuple_states_and_reverse_time():
    y0 = (torch.tensor(1.0, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64))
    sol = odegrad.solve(lambda t, y: (-y[0], y[1] * 0 + 1.0), y0, torch.tensor([1.0, -1.0], dtype=F64),
                        dense=True, rtol=1e-10, atol=1e-12)
    first, second = sol.evaluate(torch.tensor([0.0, -0.5], dtype=F64))
    assert first.shape == (2,) and second.shape == (2, 2)
    assert first.tolist() == pytest.approx([math.e, math.e ** 1.5], rel=1e-8)
    assert second[1].tolist() == pytest.approx([-1.5, 0.5], abs=1e-10)
    slope_first, _ = sol.derivative(0.0)
    assert float(slope_first) == pytest.approx(-math.e, rel=1e-7)


def test_linear_interp_dense_output_joins_the_grid_values():
    sol = odegrad.solve(_linear, torch.tensor([1.0, 0.5], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                        method="rk4", options={"step_size": 0.5, "interp": "linear"}, dense=True)
    mid, end = sol.evaluate(torch.tensor([0.25, 0.5], dtype=F64))
    assert torch.allclose(mid, (sol.evaluate(0.0) + end) / 2, atol=1e-15)
    assert torch.allclose(sol.derivative(0.1), (end - sol.evaluate(0.0)) / 0.5, atol=1e-15)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda s: s.evaluate(2.5), InvalidInput, "span"),
    (lambda s: s.derivative(torch.tensor([-0.1, 1.0])), InvalidInput, "span"),
    (lambda s: odegrad.solve(_linear, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0])).evaluate(0.5),
     InvalidInput, "dense"),
    (lambda s: odegrad.solve(_linear, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0]), dense="yes"),
     InvalidInput, "dense"),
    (lambda s: odegrad.solve(_linear, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0]), dense=True,
                             method="torchdiffeq:dopri5"), UnsupportedCombination, "dense output"),
])
def test_bad_dense_requests_are_refused(call, error, match):
    sol = odegrad.solve(_linear, torch.ones(2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64), dense=True)
    with pytest.raises(error, match=match):
        call(sol)
