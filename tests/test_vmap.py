"""``torch.func`` transforms over odeint (issue 14, item 9): vmap over initial conditions and over
parameters with fixed-step methods, ``grad`` and ``jacrev`` with respect to y0; value checks stand
aside under transforms; what cannot work is refused with an odegrad error."""

import pytest
import torch

import odegrad
from odegrad._counting import active_transforms, is_tracing
from odegrad.errors import UnsupportedCombination

F64 = torch.float64
A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
T = torch.linspace(0, 1, 5, dtype=F64)


def _linear(t, y):
    return y @ A


def _solve(y0: torch.Tensor, method: str = "rk4") -> torch.Tensor:
    return odegrad.odeint(_linear, y0, T, method=method, options={"step_size": 0.05})


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_vmap_over_initial_conditions_equals_the_batched_solve(method):
    y0 = torch.randn(6, 2, dtype=F64)
    mapped = torch.func.vmap(lambda y: _solve(y, method))(y0)
    assert mapped.shape == (6, 5, 2)
    assert torch.allclose(mapped, _solve(y0, method).transpose(0, 1), atol=1e-14, rtol=0)


def test_vmap_over_parameters():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    rates = torch.tensor([0.5, 1.0, 2.0], dtype=F64)

    def end_state(rate: torch.Tensor) -> torch.Tensor:
        return odegrad.odeint(lambda t, y: -rate * y, y0, T, method="rk4", options={"step_size": 0.01})[-1]

    mapped = torch.func.vmap(end_state)(rates)
    assert torch.allclose(mapped[:, 0], torch.exp(-rates), atol=1e-9)
    assert torch.equal(mapped[1], end_state(rates[1]))


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_grad_and_jacrev_with_respect_to_y0(method):
    """y(1) = y0 expm(A): the Jacobian is expm(A)ᵀ; grad of the sum is expm(A)'s row sums."""
    y0 = torch.tensor([0.3, -0.7], dtype=F64)
    propagator = torch.linalg.matrix_exp(A)
    jacobian = torch.func.jacrev(lambda y: _solve(y, method)[-1] if method == "rk4" else
                                 odegrad.odeint(_linear, y, T, method=method, rtol=1e-10, atol=1e-12)[-1])(y0)
    assert torch.allclose(jacobian, propagator.T, atol=1e-7)
    gradient = torch.func.grad(lambda y: _solve(y)[-1].sum())(y0)
    assert torch.allclose(gradient, propagator.sum(dim=1), atol=1e-7)


def test_vmap_of_grad_gives_per_example_gradients():
    y0 = torch.randn(4, 2, dtype=F64)
    per_example = torch.func.vmap(torch.func.grad(lambda y: (_solve(y)[-1] ** 2).sum()))(y0)
    for i in range(4):
        single = y0[i].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad((_solve(single)[-1] ** 2).sum(), single)
        assert torch.allclose(per_example[i], expected, atol=1e-12)


def test_value_checks_stand_aside_under_transforms():
    seen = []

    def probe(y: torch.Tensor) -> torch.Tensor:
        seen.append((is_tracing(), active_transforms()))
        return y.sum()

    torch.func.vmap(probe)(torch.ones(2, 3))
    torch.func.grad(probe)(torch.ones(3))
    assert seen == [(True, frozenset({"vmap"})), (True, frozenset({"grad"}))]
    assert not is_tracing() and active_transforms() == frozenset()


def test_adaptive_methods_under_vmap_and_adjoint_backends_under_transforms_are_refused():
    y0 = torch.randn(3, 2, dtype=F64)
    with pytest.raises(UnsupportedCombination, match="vmap"):
        torch.func.vmap(lambda y: odegrad.odeint(_linear, y, T))(y0)
    with pytest.raises(UnsupportedCombination, match="gradient='gq'"):
        torch.func.grad(lambda y: odegrad.odeint(_linear, y, T, method="rk4", gradient="gq")[-1].sum())(y0[0])
