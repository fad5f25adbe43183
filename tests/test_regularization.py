"""Local regularization (Pal et al. 2023) and the global regularizers it is compared with."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import odegrad
from odegrad.errors import InvalidInput, UnsupportedCombination
from odegrad.models import NeuralODE
from odegrad.regularization import Kinetic, LocalRegularization, TaylorOrder
from odegrad.solvers import CountedFunc, PIController, get_solver
from odegrad.testing import RandomMLPField, expected_error, relative_disagreement

D = torch.float64
BACKENDS = ("direct", "backsolve", "gq", "interp")
T = torch.tensor([0.0, 0.4, 1.0], dtype=D)


def _field(seed: int = 0) -> RandomMLPField:
    return RandomMLPField(2, 8, 1, seed=seed, gain=0.6)


def _y0() -> torch.Tensor:
    return torch.tensor([[1.0, -0.5], [0.2, 0.8], [-0.7, 0.1]], dtype=D)


def _local(sampling: str, seed: int = 3, **kwargs) -> LocalRegularization:
    return LocalRegularization(error=1.0, sampling=sampling, generator=torch.Generator().manual_seed(seed), **kwargs)


def _solve(field, regularization, gradient="direct", method="dopri5", t=T):
    return odegrad.solve(field, _y0(), t, method=method, gradient=gradient, rtol=1e-6, atol=1e-8,
                         regularization=regularization)


@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_local_term_is_finite_positive_and_its_times_lie_in_the_span(sampling, method):
    reg = _local(sampling, samples=4, stiffness=0.5)
    term = _solve(_field(), reg, method=method).regularization
    assert term.dim() == 0 and math.isfinite(float(term)) and float(term) > 0
    assert len(reg.last_draws) == 4
    assert all(0.0 <= draw.t <= 1.0 and draw.h != 0 for draw in reg.last_draws)


def _reexecuted_term(field, draw, stiffness: float = 0.0) -> torch.Tensor:
    """EEst·|h| (+ stiffness) of one dopri5 step from a draw, by the public solver API."""
    solver = get_solver("dopri5")
    func = CountedFunc(field, D)
    result = solver.step(func, draw.t, draw.h, draw.y, solver.init(func, draw.t, draw.y))
    term = PIController.scaled_error(draw.y, result.y1, result.error, 1e-6, 1e-8, odegrad.solvers.rms_norm)
    term = term * abs(draw.h)
    if stiffness:
        term = term + stiffness * result.stiffness()
    return term


@pytest.mark.parametrize("gradient", BACKENDS)
@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
def test_gradient_is_that_of_the_reexecuted_step_and_matches_finite_differences(gradient, sampling):
    field = _field(seed=1)
    reg = _local(sampling, stiffness=0.3)
    term = _solve(field, reg, gradient=gradient).regularization
    params = list(field.parameters())
    grads = torch.autograd.grad(term, params)
    (draw,) = reg.last_draws
    torch.testing.assert_close(term, _reexecuted_term(field, draw, 0.3), rtol=1e-12, atol=0)
    weight = params[0]
    direction = torch.randn(weight.shape, dtype=D, generator=torch.Generator().manual_seed(5))
    eps = 1e-6
    with torch.no_grad():
        weight += eps * direction
        plus = float(_reexecuted_term(field, draw, 0.3))
        weight -= 2 * eps * direction
        minus = float(_reexecuted_term(field, draw, 0.3))
        weight += eps * direction
    fd = (plus - minus) / (2 * eps)
    assert abs(float((grads[0] * direction).sum()) - fd) <= 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
def test_term_is_identical_across_gradient_backends_for_the_same_draw(sampling):
    values = [float(_solve(_field(), _local(sampling, samples=3), gradient=g).regularization) for g in BACKENDS]
    assert values == [values[0]] * len(values)


def test_biased_sampling_needs_no_extra_stop_and_unbiased_lands_on_its_times():
    plain = _solve(_field(), None)
    biased = _solve(_field(), _local("biased", samples=5))
    torch.testing.assert_close(biased.steps.t, plain.steps.t, rtol=0, atol=0)
    torch.testing.assert_close(biased.ys, plain.ys, rtol=0, atol=0)
    reg = _local("unbiased", samples=2)
    unbiased = _solve(_field(), reg)
    step_ends = (unbiased.steps.t + unbiased.steps.h).tolist()
    assert all(draw.t in step_ends for draw in reg.last_draws)
    assert {draw.t for draw in reg.last_draws} <= set(unbiased.steps.t.tolist())


@pytest.mark.parametrize("gradient", BACKENDS[1:])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_task_gradients_still_agree_with_a_regularizer_attached(gradient, method):
    def grads(backend):
        field = _field(seed=2)
        sol = _solve(field, _local("unbiased", samples=2), gradient=backend, method=method)
        loss = sol.ys.pow(2).sum() + sol.regularization
        return dict(zip([n for n, _ in field.named_parameters()], torch.autograd.grad(loss, list(field.parameters()))))

    disagreement, where = relative_disagreement(grads(gradient), grads("direct"))
    settings = odegrad.testing.Settings(rtol=1e-6, atol=1e-8)
    assert disagreement <= expected_error(method, settings, span=1.0, scale=1.0, steps=200), where


def test_neural_ode_exposes_the_term_after_each_forward():
    model = NeuralODE(_field(), t=(0.0, 1.0), regularization=_local("unbiased"))
    assert model.regularization is None
    out = model(_y0())
    assert out.shape == (3, 2) and model.regularization.dim() == 0 and model.regularization.requires_grad
    model.eval()  # predictions skip the training penalty (no extra stop, no re-executed step)
    torch.testing.assert_close(model(_y0()), NeuralODE(_field(), t=(0.0, 1.0))(_y0()), rtol=0, atol=0)
    assert model.regularization is None


@pytest.mark.parametrize("method, options", [("rk4", {"step_size": 0.1}), ("euler", None), ("taylor", None),
                                             ("torchdiffeq:dopri5", None)])
def test_methods_without_a_reexecutable_error_estimate_are_refused(method, options):
    with pytest.raises(UnsupportedCombination, match="local regularization"):
        odegrad.solve(_field(), _y0(), T, method=method, options=options, regularization=LocalRegularization())


@pytest.mark.parametrize("kwargs, argument", [
    ({"sampling": "random"}, "sampling"), ({"error": -1.0}, "error"), ({"error": math.nan}, "error"),
    ({"stiffness": math.inf}, "stiffness"), ({"samples": 0}, "samples"), ({"samples": 1.5}, "samples"),
    ({"generator": 3}, "generator"),
])
def test_bad_local_regularization_arguments_are_named(kwargs, argument):
    with pytest.raises(InvalidInput) as info:
        LocalRegularization(**kwargs)
    assert info.value.argument == argument


def test_bad_regularization_objects_and_weights_are_refused():
    with pytest.raises(InvalidInput, match="regularization"):
        odegrad.solve(_field(), _y0(), T, regularization="local")
    with pytest.raises(InvalidInput, match="kinetic"):
        Kinetic(kinetic=0.0, jacobian=0.0)
    with pytest.raises(InvalidInput, match="order"):
        TaylorOrder(order=0)
    with pytest.raises(InvalidInput, match="weight"):
        TaylorOrder(weight=-1.0)


class _Linear(nn.Module):
    """y' = a·y with a learnable scalar a."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=D))

    def forward(self, t, y):
        return self.a * y


@pytest.mark.parametrize("gradient", BACKENDS)
def test_global_regularizers_integrate_their_exact_values(gradient):
    a, span = -0.7, 1.5
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=D)
    t = torch.tensor([0.0, span], dtype=D)
    sq = y0.pow(2).sum() / 2  # batch of 2: the terms are averaged over it
    energy = sq * (math.exp(2 * a * span) - 1) / (2 * a)  # ∫ Σ y² dt per sample
    kinetic = Kinetic(kinetic=1.0, jacobian=0.0)
    sol = odegrad.solve(_Linear(a), y0, t, gradient=gradient, rtol=1e-10, atol=1e-12, regularization=kinetic)
    assert math.isclose(float(sol.regularization), a ** 2 * energy, rel_tol=1e-7)
    assert sol.ys.shape == (2, 2, 2)
    generator = torch.Generator().manual_seed(0)
    epsilon = torch.randn(y0.shape, generator=generator, dtype=D)
    jacobian = Kinetic(kinetic=0.0, jacobian=1.0, generator=torch.Generator().manual_seed(0))
    sol = odegrad.solve(_Linear(a), y0, t, gradient=gradient, rtol=1e-10, atol=1e-12, regularization=jacobian)
    assert math.isclose(float(sol.regularization), a ** 2 * float(epsilon.pow(2).sum()) * span / 2, rel_tol=1e-7)
    sol = odegrad.solve(_Linear(a), y0, t, gradient=gradient, rtol=1e-10, atol=1e-12,
                        regularization=TaylorOrder(order=2, weight=1.0))
    assert math.isclose(float(sol.regularization), a ** 4 * energy, rel_tol=1e-7)


@pytest.mark.parametrize("regularizer", [Kinetic(kinetic=1.0, jacobian=0.5), TaylorOrder(order=2, weight=1.0)],
                         ids=["kinetic", "taylor"])
def test_global_regularizer_gradients_agree_across_backends(regularizer):
    def grad(gradient):
        model = _Linear(-0.7)
        regularizer.generator = torch.Generator().manual_seed(0) if isinstance(regularizer, Kinetic) else None
        sol = odegrad.solve(model, _y0(), T, gradient=gradient, rtol=1e-9, atol=1e-11, regularization=regularizer)
        (g,) = torch.autograd.grad(sol.regularization, [model.a])
        return float(g)

    reference = grad("direct")
    for gradient in BACKENDS[1:]:
        assert math.isclose(grad(gradient), reference, rel_tol=1e-5), gradient
