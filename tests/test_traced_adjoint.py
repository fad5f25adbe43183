"""``gradient="backsolve"``, ``"gq"`` and ``"interp"`` on the traced driver: the backward pass is
one ``torch.while_loop`` sweep over all output times, so an adaptive training step compiles into
one graph. Exact gradients of a linear ODE, agreement with the eager backward, ``torch.compile(
fullgraph=True)`` without recompilation, the drift check, interp's held-out check, and the eager
fallback where the backward cannot be traced."""

import pytest
import torch

import odegrad
from odegrad.errors import InterpolationError, ReverseSolveDrift
from odegrad.gradients import Backsolve, GaussQuadrature, Interpolation, Problem, get_backend
from odegrad.gradients._traced_adjoint import traces_backward
from odegrad.models import NeuralODE
from odegrad.solvers import get_solver, make_config
from odegrad.testing import LinearField

from .support import assert_trains_like

F64 = torch.float64
TRACED = {"driver": "traced"}
TRACEABLE = ["backsolve", "gq", "interp"]


class Field(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


def _grads(func, y0, t, options=None, gradient="backsolve"):
    solution = odegrad.solve(func, y0, t, gradient=gradient, rtol=1e-9, atol=1e-11, options=options)
    loss = (solution.ys * torch.linspace(0.5, 1.5, solution.ys.numel(), dtype=F64).view_as(solution.ys)).sum()
    return solution, torch.autograd.grad(loss, (y0, t, *func.parameters()))


@pytest.mark.parametrize("gradient", TRACEABLE)
@pytest.mark.parametrize("times", [(0.0, 0.3, 1.1, 2.0), (1.5, 0.9, -0.4)], ids=["forward", "reverse"])
def test_gradients_match_the_matrix_exponential(times, gradient):
    A = torch.tensor([[-0.4, 1.1, 0.0], [-0.9, -0.2, 0.3], [0.2, 0.0, -0.5]], dtype=F64)
    func = LinearField(A)
    y0 = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    solution, grads = _grads(func, y0, t, TRACED, gradient)
    y0e, te, Ae = y0.detach().requires_grad_(), t.detach().requires_grad_(), A.clone().requires_grad_()
    exact = torch.einsum("nij,bj->nbi", torch.linalg.matrix_exp(Ae * (te - te[0])[:, None, None]), y0e)
    weights = torch.linspace(0.5, 1.5, exact.numel(), dtype=F64).view_as(exact)
    expected = torch.autograd.grad((exact * weights).sum(), (y0e, te, Ae))
    torch.testing.assert_close(solution.ys.detach(), exact.detach(), rtol=1e-8, atol=1e-9)
    for name, grad, want in zip(("y0", "t", "A"), grads, expected):
        torch.testing.assert_close(grad, want, rtol=1e-7, atol=1e-8, msg=f"dL/d{name}")
    assert solution.stats.nfe_backward > 0 and solution.status is not None


@pytest.mark.parametrize("gradient", TRACEABLE)
def test_one_sweep_agrees_with_the_eager_backward_segment_by_segment(gradient):
    func = Field()
    y0 = torch.randn(5, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 6, dtype=F64, requires_grad=True)
    traced, traced_grads = _grads(func, y0, t, TRACED, gradient)
    eager, eager_grads = _grads(func, y0, t, gradient=gradient)
    assert eager.status is None  # the eager backsolve: eager driver, segment by segment
    assert traced.stats.steps_accepted == eager.stats.steps_accepted
    for grad, expected in zip(traced_grads, eager_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-8)


AOT_EAGER = {"backend": "aot_eager"}
CPP_WRAPPER = {"options": {"cpp_wrapper": True}}
"""Inductor with its C++ wrapper, which the compile guide recommends for adjoint training on CPU."""


@pytest.mark.parametrize(("gradient", "compiler"),
                         [("backsolve", AOT_EAGER), ("gq", CPP_WRAPPER), ("interp", AOT_EAGER)],
                         ids=["backsolve", "gq-inductor-cpp", "interp"])
def test_compiled_training_step_is_one_graph(no_recompiles, gradient, compiler):
    """A graph break fails here (``fullgraph=True``); the compiled step's outputs and gradients
    are the traced-eager step's (gq: inductor's own kernels, forward and backward sweep)."""
    model = NeuralODE(Field(), t=(0.0, 0.4, 1.0), method="dopri5", gradient=gradient, rtol=1e-7, atol=1e-9,
                      return_trajectory=True)
    reference = NeuralODE(Field(), t=(0.0, 0.4, 1.0), method="dopri5", gradient=gradient, rtol=1e-7, atol=1e-9,
                          return_trajectory=True, options=TRACED)
    compiled = torch.compile(model, fullgraph=True, **compiler)
    assert_trains_like(compiled, reference, (model, reference), (4, 2), iterations=2)


def _dissipative():
    return LinearField(torch.diag(torch.tensor([-1.0, -60.0], dtype=F64)))


@pytest.mark.parametrize("backend", [Backsolve, GaussQuadrature])
def test_a_reverse_solve_that_drifts_is_refused(backend):
    func = _dissipative()
    y0 = torch.ones(1, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)
    ys = odegrad.odeint(func, y0, t, gradient=backend(), rtol=1e-6, atol=1e-8, options=TRACED)
    with pytest.raises(ReverseSolveDrift, match="misses the stored forward output") as caught:
        ys.sum().backward()
    assert caught.value.drift > 1e3 and 0 <= caught.value.segment < 3
    warned = backend(on_drift="warn")
    ys = odegrad.odeint(func, y0, t, gradient=warned, rtol=1e-6, atol=1e-8, options=TRACED)
    with pytest.warns(RuntimeWarning, match="tolerance units"):
        ys.sum().backward()


def test_a_compiled_reverse_solve_that_drifts_gives_nan_gradients():
    torch._dynamo.reset()
    func = _dissipative()
    t = torch.linspace(0.0, 3.0, 4, dtype=F64)

    def loss(y0):
        return odegrad.odeint(func, y0, t, gradient="backsolve", rtol=1e-6, atol=1e-8).sum()

    y0 = torch.ones(1, 2, dtype=F64, requires_grad=True)
    torch.compile(loss, fullgraph=True, backend="aot_eager")(y0).backward()
    assert torch.isnan(y0.grad).all() and torch.isnan(func.A.grad).all()


def test_the_backward_stays_eager_where_it_cannot_be_traced():
    """A func that is not a module owning the parameters (its values cannot be swapped into
    torch.func.vjp) keeps the eager backward pass, with the same gradients."""
    module = Field()
    closure = lambda t, y: module(t, y)  # noqa: E731
    y0 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    solver = get_solver("dopri5")
    backend = get_backend("backsolve")
    params = tuple(module.parameters())

    def problem(func):
        return Problem(func=func, y0=y0, t=t, solver=solver, config=make_config(solver, 1e-6, 1e-8, TRACED),
                       params=params)

    assert traces_backward(backend, problem(module)) and not traces_backward(backend, problem(closure))
    ys = odegrad.odeint(closure, y0, t, gradient="backsolve", params=params, options=TRACED)
    got = torch.autograd.grad(ys.pow(2).sum(), (y0, *params))
    ys = odegrad.odeint(module, y0, t, gradient="backsolve", options=TRACED)
    expected = torch.autograd.grad(ys.pow(2).sum(), (y0, *params))
    for grad, want in zip(got, expected):
        torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 256])
def test_the_float_gauss_legendre_rule_is_numpys(n):
    """gq's rule is computed in Python floats (torch.compile cannot trace numpy's leggauss)."""
    import numpy as np

    from odegrad.gradients._base import legendre_rule

    x, w = (np.asarray(values) for values in legendre_rule(n))
    expected_x, expected_w = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(x, expected_x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w, expected_w, rtol=0, atol=1e-14)
    for degree in range(0, min(2 * n, 40), 2):  # exact for polynomials of degree 2n - 1
        assert abs((w * x ** degree).sum() - 2 / (degree + 1)) < 1e-14


@pytest.mark.parametrize("gradient", TRACEABLE)
def test_a_module_without_parameters_gets_its_y0_gradient(gradient):
    class Decay(torch.nn.Module):
        def forward(self, t, y):
            return -y * torch.cos(t)

    y0 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    (traced,) = torch.autograd.grad(odegrad.odeint(Decay(), y0, t, gradient=gradient, options=TRACED).sum(), y0)
    exact = torch.exp(-torch.sin(t))[:, None, None].expand(3, 3, 2).sum(dim=0)  # d/dy0 of Σ_i y0·e^{−sin t_i}
    torch.testing.assert_close(traced, exact, rtol=1e-6, atol=1e-8)


def test_an_interpolant_that_misses_its_held_out_points_is_refused():
    """interp's traced forward samples a fixed node count per segment: too few nodes on a long
    segment fail the held-out check as in the eager interp (raise, warn, NaN when compiled)."""
    torch._dynamo.reset()
    func = Field()
    t = torch.tensor([0.0, 6.0], dtype=F64)
    y0 = torch.randn(3, 2, dtype=F64, requires_grad=True)
    with pytest.raises(InterpolationError, match="4-node Chebyshev interpolant"):
        odegrad.odeint(func, y0, t, gradient=Interpolation(nodes=4), options=TRACED)
    with pytest.warns(RuntimeWarning, match="held-out"):
        odegrad.odeint(func, y0, t, gradient=Interpolation(nodes=4, on_failure="warn"), options=TRACED)

    def loss(y0):
        return odegrad.odeint(func, y0, t, gradient=Interpolation(nodes=4)).sum()

    torch.compile(loss, fullgraph=True, backend="aot_eager")(y0).backward()
    assert torch.isnan(y0.grad).all()


def test_compiling_more_functions_does_not_recompile_the_first(no_recompiles):
    """The check that func reaches no unregistered trainable tensor reads the globals of func's
    module, which every compilation in that module grows: traced, it would guard on their size and
    each new compiled function would recompile the others (a recompile storm in a training script
    with a compiled train and eval step). Field is defined here, beside the compiled functions."""
    func = Field()
    t = torch.tensor([0.0, 0.5], dtype=F64)

    def train(y0):
        return odegrad.odeint(func, y0, t, gradient="backsolve").sum()

    def evaluate(y0):
        return odegrad.odeint(func, y0, t, gradient="gq").sum()

    first = torch.compile(train, fullgraph=True, backend="aot_eager")
    second = torch.compile(evaluate, fullgraph=True, backend="aot_eager")
    y0 = torch.ones(1, 2, dtype=F64, requires_grad=True)
    for _ in range(2):  # a recompilation of either fails the test
        first(y0).backward()
        second(y0).backward()


@pytest.mark.parametrize("gradient", TRACEABLE)
def test_float32_sweep_agrees_with_the_eager_backward(gradient):
    torch.manual_seed(0)
    func = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    field = Autonomous(func)
    y0 = torch.randn(6, 2, requires_grad=True)
    t = torch.linspace(0.0, 1.5, 4)
    grads = {}
    for driver in ("eager", "traced"):
        ys = odegrad.odeint(field, y0, t, gradient=gradient, rtol=1e-5, atol=1e-7, options={"driver": driver})
        grads[driver] = torch.autograd.grad(ys.pow(2).sum(), (y0, *field.parameters()))
    for traced, eager in zip(grads["traced"], grads["eager"]):
        assert traced.dtype == torch.float32
        torch.testing.assert_close(traced, eager, rtol=1e-3, atol=1e-4)  # two backward solves at rtol 1e-5


class Autonomous(torch.nn.Module):
    """An autonomous float32 field around ``net``."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)
