"""Implicit (stiff) methods: order, accuracy on stiff problems, Jacobian modes, Newton failure
handling, statistics, option errors, and gradients of every backend against exact ones."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import odegrad
from odegrad.errors import IntegrationFailure, InvalidInput, JacobianUnavailable, ReverseSolveDrift
from odegrad.gradients import Backsolve, GaussQuadrature
from odegrad.solvers import ESDIRK_TABLEAUX, counted, kvaerno5, make_esdirk, rodas4

D = torch.float64
ADAPTIVE = ["kvaerno3", "kvaerno4", "kvaerno5", "rodas4"]


def _pendulum(t, y):
    return torch.stack([y[1], -torch.sin(y[0]) + 0.1 * torch.cos(t)])


def _fixed_steps(solver, n: int, span: float = 2.0) -> torch.Tensor:
    """``n`` equal steps of ``solver`` on the forced pendulum from (1, 0)."""
    func, y, h = counted(_pendulum), torch.tensor([1.0, 0.0], dtype=D), span / n
    state = solver.init(func, 0.0, y)
    for i in range(n):
        result = solver.step(func, i * h, h, y, state)
        assert bool(result.converged)
        y, state = result.y1, result.state
    return y


@pytest.mark.parametrize("name", [*ESDIRK_TABLEAUX, "rodas4"])
def test_observed_order_matches_declared_order(name):
    solver = rodas4() if name == "rodas4" else make_esdirk(name, newton_tol=1e-4, max_newton_iterations=20)
    reference = _fixed_steps(solver, 256)
    errors = [float((_fixed_steps(solver, n) - reference).norm()) for n in (16, 32)]
    assert math.log2(errors[0] / errors[1]) > solver.order - 0.3


def test_esdirk_tableaux_satisfy_row_sums_and_stiff_accuracy():
    for tableau in ESDIRK_TABLEAUX.values():
        for c, row in zip(tableau.c[1:], tableau.a[1:]):
            assert sum(row) + tableau.gamma == pytest.approx(c, abs=1e-9)
        assert tableau.c[-1] == 1.0
        if tableau.b_error is not None:
            assert sum(tableau.b_error) == pytest.approx(0.0, abs=1e-9)


class StiffLinear(torch.nn.Module):
    """y' = A y with eigenvalues near −1 and −1000 (A a parameter)."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-1.0, 0.5], [-10.0, -1000.0]], dtype=D))

    def forward(self, t, y):
        return y @ self.A.T


def _exact_linear(field, y0, t):
    return torch.stack([torch.linalg.matrix_exp(field.A * ti) @ y0 for ti in t])


def _loss(ys):
    weights = torch.tensor([[0.3, -0.7], [1.1, 0.4]], dtype=D)
    return (ys[1:] * weights).sum()


@pytest.mark.parametrize("method", ["kvaerno5", "rodas4"])
@pytest.mark.parametrize("gradient", ["direct", "interp"])
def test_stiff_linear_gradients_match_matrix_exponential(method, gradient):
    field = StiffLinear()
    y0 = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    exact = torch.autograd.grad(_loss(_exact_linear(field, y0, t)), (y0, field.A))
    sol = odegrad.solve(field, y0, t, method=method, gradient=gradient, rtol=1e-6, atol=1e-9)
    got = torch.autograd.grad(_loss(sol.ys), (y0, field.A))
    for a, b in zip(got, exact):
        assert float((a - b).norm() / b.norm()) < 1e-3
    assert sol.stats.steps_accepted < 300  # dopri5 needs thousands here (|hλ| ≤ 3.3)


def test_implicit_euler_direct_gradient_is_the_exact_discrete_gradient():
    """Direct backprop through implicit Euler differentiates each stage by the implicit function
    theorem; for y' = A y the scheme is y_{n+1} = (I − hA)⁻¹ y_n, differentiable exactly."""
    field = StiffLinear()
    y0 = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.05, 0.1], dtype=D)
    h = 0.01
    sol = odegrad.solve(field, y0, t, method="implicit_euler", options={"step_size": h})
    got = torch.autograd.grad(_loss(sol.ys), (y0, field.A))
    ys, y = [y0], y0
    for i in range(10):
        y = torch.linalg.solve(torch.eye(2, dtype=D) - h * field.A, y)
        if i in (4, 9):
            ys.append(y)
    exact = torch.autograd.grad(_loss(torch.stack(ys)), (y0, field.A))
    assert (sol.ys - torch.stack(ys)).abs().max() < 1e-9
    for a, b in zip(got, exact):
        assert float((a - b).norm() / b.norm()) < 1e-7


class StiffVanDerPol(torch.nn.Module):
    """Van der Pol with a learnable μ (moderately stiff at μ = 30)."""

    def __init__(self, mu: float = 30.0):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=D))

    def forward(self, t, y):
        return torch.stack([y[1], self.mu * (1 - y[0] ** 2) * y[1] - y[0]])


def test_nonlinear_stiff_interp_gradient_agrees_with_direct_and_finite_differences():
    field = StiffVanDerPol()
    y0 = torch.tensor([2.0, 0.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    grads = {}
    for gradient in ("direct", "interp"):
        ys = odegrad.odeint(field, y0, t, method="kvaerno5", gradient=gradient, rtol=1e-7, atol=1e-10)
        grads[gradient] = torch.autograd.grad(ys[1:].sum(), (y0, field.mu))
    for a, b in zip(grads["interp"], grads["direct"]):
        assert float((a - b).norm() / b.norm()) < 1e-4
    step = 1e-5
    with torch.no_grad():
        values = []
        for mu in (30.0 + step, 30.0 - step):
            field.mu.fill_(mu)
            values.append(odegrad.odeint(field, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-12)[1:].sum())
        field.mu.fill_(30.0)
    finite_difference = (values[0] - values[1]) / (2 * step)
    assert float((grads["direct"][1] - finite_difference).abs() / finite_difference.abs()) < 1e-3


@pytest.mark.parametrize("backend", [Backsolve(), GaussQuadrature()], ids=["backsolve", "gq"])
def test_reverse_state_solves_refuse_stiff_problems(backend):
    field = StiffLinear()
    y0 = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.02, 0.04], dtype=D)  # e^{1000·0.02}: far beyond any tolerance backwards
    ys = odegrad.odeint(field, y0, t, method="kvaerno5", gradient=backend, rtol=1e-4, atol=1e-7)
    with pytest.raises(ReverseSolveDrift, match="interp"):
        ys.sum().backward()


def _robertson(t, y):
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                        0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2,
                        3e7 * y2 ** 2], dim=-1)


def _robertson_np(t, y):
    return [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]


@pytest.mark.parametrize("method", ADAPTIVE)
def test_robertson_matches_scipy_radau(method):
    t = torch.tensor([0.0, 1e-2, 1.0, 1e2], dtype=D)
    reference = solve_ivp(_robertson_np, (0, 1e2), [1.0, 0.0, 0.0], method="Radau", t_eval=t.numpy(),
                          rtol=1e-12, atol=1e-14).y.T
    sol = odegrad.solve(_robertson, torch.tensor([1.0, 0.0, 0.0], dtype=D), t, method=method,
                        rtol=1e-6, atol=1e-10)
    scale = np.abs(reference) + 1e-6 * np.abs(reference).max(axis=0)  # y2 ~ 1e-5: relative per component
    assert np.max(np.abs(sol.ys.numpy() - reference) / scale) < 1e-2
    assert sol.stats.jacobian_evals >= 1 and sol.stats.lu_factorizations >= 1
    assert sol.stats.steps_accepted < 500


def test_stats_count_implicit_work_and_stay_zero_for_explicit_methods():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    implicit = odegrad.solve(_robertson, y0, t, method="kvaerno4", rtol=1e-6, atol=1e-10).stats
    assert implicit.jacobian_evals >= 1 and implicit.lu_factorizations >= 1 and implicit.newton_iterations > 0
    explicit = odegrad.solve(_robertson, y0, torch.tensor([0.0, 1e-3], dtype=D), method="dopri5").stats
    assert (explicit.jacobian_evals, explicit.lu_factorizations, explicit.newton_iterations,
            explicit.newton_failures) == (0, 0, 0, 0)


def test_newton_failure_rejects_the_step_and_the_solve_recovers():
    solver = kvaerno5(max_newton_iterations=2)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 10.0], dtype=D)
    sol = odegrad.solve(_robertson, y0, t, method=solver, rtol=1e-6, atol=1e-10, options={"first_step": 1.0})
    assert sol.stats.newton_failures >= 1 and sol.stats.steps_rejected >= sol.stats.newton_failures
    good = odegrad.solve(_robertson, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-10)
    assert (sol.ys[-1] - good.ys[-1]).abs().max() < 1e-5


def test_fixed_step_newton_failure_raises_instead_of_accepting():
    solver = make_esdirk("implicit_euler", max_newton_iterations=1)
    with pytest.raises(IntegrationFailure, match="Newton"):
        odegrad.odeint(lambda t, y: -1e3 * y ** 3, torch.tensor([1.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D),
                       method=solver, options={"step_size": 0.5})


def _batched_stiff(t, y):
    """Independent 2-D stiff systems, one per batch row: ``[B, 2] -> [B, 2]``."""
    return torch.stack([-y[:, 0] + y[:, 1] ** 2, -500.0 * (y[:, 1] - torch.cos(y[:, 0]))], dim=-1)


def test_jacobian_modes_agree():
    y0 = torch.tensor([[1.0, 0.0], [0.5, 1.0], [-1.0, 2.0]], dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    reference = odegrad.odeint(_batched_stiff, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-12)
    for mode in ("dense", "batch", "fd", "krylov"):
        ys = odegrad.odeint(_batched_stiff, y0, t, method=kvaerno5(jacobian=mode), rtol=1e-6, atol=1e-9)
        assert (ys - reference).abs().max() < 1e-4, mode  # global error ~ 20 steps × rtol
    batch_rodas = odegrad.odeint(_batched_stiff, y0, t, method=rodas4(jacobian="batch"), rtol=1e-6, atol=1e-9)
    assert (batch_rodas - reference).abs().max() < 1e-4


def test_batch_jacobian_refuses_a_func_that_couples_batch_entries():
    def coupled(t, y):
        return -500.0 * (y - y.mean(dim=0, keepdim=True)) - y

    with pytest.raises(InvalidInput, match="batch entry depends"):
        odegrad.odeint(coupled, torch.randn(4, 2, dtype=D), torch.tensor([0.0, 1.0], dtype=D),
                       method=kvaerno5(jacobian="batch"))


def test_a_func_without_a_torch_func_jacobian_names_the_option_that_avoids_it():
    def opaque(t, y):  # leaves torch: no Jacobian by torch.func
        return torch.as_tensor(-50.0 * y.detach().numpy(), dtype=y.dtype)

    y0, t = torch.tensor([1.0, 2.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(JacobianUnavailable, match="jacobian='fd'"):
        odegrad.odeint(opaque, y0, t, method="kvaerno3")
    ys = odegrad.odeint(opaque, y0, t, method=kvaerno5(jacobian="fd"), rtol=1e-8, atol=1e-10)
    assert (ys[-1] - y0 * math.exp(-50.0)).abs().max() < 1e-8


@pytest.mark.parametrize("options, argument", [
    ({"jacobian": "lu"}, "jacobian"),
    ({"newton_tol": 0.0}, "newton_tol"),
    ({"newton_tol": -1.0}, "newton_tol"),
    ({"max_newton_iterations": 0}, "max_newton_iterations"),
])
def test_bad_implicit_options_raise_invalid_input(options, argument):
    with pytest.raises(InvalidInput, match=argument):
        kvaerno5(**options)


def test_rosenbrock_refuses_krylov():
    with pytest.raises(InvalidInput, match="krylov"):
        rodas4(jacobian="krylov")


@pytest.mark.parametrize("method", ["kvaerno3", "rodas4"])
def test_dense_output_of_a_stiff_solve(method):
    field = StiffLinear()
    y0 = torch.tensor([1.0, 2.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    with torch.no_grad():
        sol = odegrad.solve(field, y0, t, method=method, rtol=1e-8, atol=1e-10, dense=True)
        inside = torch.tensor([0.013, 0.37, 0.81], dtype=D)
        exact = _exact_linear(field, y0, inside)
        assert (sol.evaluate(inside) - exact).abs().max() < 1e-5
        slope = (exact @ field.A.T)[1:]
        assert ((sol.derivative(inside)[1:] - slope).abs() / slope.abs().max()).max() < 1e-3


def test_fixed_step_trapezoid_converges_at_second_order_through_odeint():
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 2.0], dtype=D)
    reference = odegrad.odeint(_pendulum, y0, t, method="kvaerno5", rtol=1e-12, atol=1e-12)[-1]
    errors = [float((odegrad.odeint(_pendulum, y0, t, method="trapezoid", options={"step_size": h})[-1]
                     - reference).norm()) for h in (0.1, 0.05)]
    assert math.log2(errors[0] / errors[1]) > 1.8


def test_direct_gradients_agree_across_jacobian_modes():
    """The implicit-function-theorem backward pass preconditions with the mode's factorization
    (none for krylov): every mode gives the same gradients."""
    weight = torch.tensor([1.0, -2.0], dtype=D, requires_grad=True)

    def field(t, y):
        return _batched_stiff(t, y) * torch.stack([torch.ones_like(weight[0]), weight[0].abs()]) + weight[1] * y

    y0 = torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.3], dtype=D)
    grads = {}
    for mode in ("dense", "batch", "krylov"):
        ys = odegrad.odeint(field, y0, t, method=kvaerno5(jacobian=mode), rtol=1e-8, atol=1e-10)
        grads[mode] = torch.autograd.grad(ys[-1].pow(2).sum(), (y0, weight))
    for mode in ("batch", "krylov"):
        for a, b in zip(grads[mode], grads["dense"]):
            assert float((a - b).norm() / b.norm()) < 1e-5, mode
