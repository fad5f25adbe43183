"""direct and backsolve gradients: exact linear-ODE gradients, mutual agreement, torchdiffeq."""

import pytest
import torch
import torchdiffeq

import odegrad
from odegrad.gradients import Backsolve

BACKENDS = ["direct", "backsolve", Backsolve(seminorm=True)]
IDS = ["direct", "backsolve", "backsolve-seminorm"]


class Linear(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = torch.nn.Parameter(A.clone())

    def forward(self, t, y):
        return y @ self.A.T


def exact_linear_loss(A, y0, t, weights):
    """L = Σ_i <w_i, expm(A (t_i - t_0)) y0>, differentiable in A, y0, t via matrix_exp."""
    ys = torch.stack([torch.linalg.matrix_exp(A * (ti - t[0])) @ y0 for ti in t])
    return (ys * weights).sum()


@pytest.mark.parametrize("gradient", BACKENDS, ids=IDS)
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_exact_gradients_linear_ode(gradient, method):
    A = torch.tensor([[-0.3, 1.2, 0.0], [-1.1, -0.2, 0.4], [0.1, -0.5, -0.6]], dtype=torch.float64)
    y0 = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
    t = torch.tensor([0.0, 0.4, 1.1, 2.0], dtype=torch.float64)
    w = torch.randn(4, 3, dtype=torch.float64)

    A_ref, y0_ref, t_ref = (x.clone().requires_grad_() for x in (A, y0, t))
    exact_linear_loss(A_ref, y0_ref, t_ref, w).backward()

    func = Linear(A)
    y0_ = y0.clone().requires_grad_()
    t_ = t.clone().requires_grad_()
    # 3rd-order bosh3 needs ~20x more steps than the 5th-order pairs for the same tolerance.
    rtol = 1e-9 if method == "bosh3" else 1e-11
    ys = odegrad.odeint(func, y0_, t_, method=method, gradient=gradient, rtol=rtol, atol=rtol * 1e-2)
    (ys * w).sum().backward()
    for ours, ref in ((y0_.grad, y0_ref.grad), (func.A.grad, A_ref.grad), (t_.grad, t_ref.grad)):
        assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-8), (ours, ref)


def _grads(func, y0, t, gradient, method="dopri5", **kw):
    y0 = y0.clone().requires_grad_()
    t = t.clone().requires_grad_()
    ys = odegrad.odeint(func, y0, t, method=method, gradient=gradient, **kw)
    loss = (ys ** 2).sum() + ys[-1].sin().sum()
    params = list(func.parameters())
    grads = torch.autograd.grad(loss, [y0, t, *params])
    return grads


@pytest.mark.parametrize("method", ["dopri5", "rk4", "torchdiffeq:dopri5"])
def test_backsolve_agrees_with_direct_on_mlp(method, mlp_field):
    y0 = torch.randn(7, 2, dtype=torch.float64)
    t = torch.linspace(0, 1.5, 5, dtype=torch.float64)
    kw = {"options": {"step_size": 0.01}} if method == "rk4" else {"rtol": 1e-10, "atol": 1e-12}
    direct = _grads(mlp_field, y0, t, "direct", method, **kw)
    back = _grads(mlp_field, y0, t, "backsolve", method, **kw)
    tol = 1e-5 if method == "rk4" else 1e-6
    for a, b in zip(direct, back):
        assert torch.allclose(a, b, rtol=tol, atol=tol)


def test_backsolve_matches_torchdiffeq_adjoint(mlp_field):
    y0 = torch.randn(4, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    ours = _grads(mlp_field, y0, t, "backsolve", rtol=1e-10, atol=1e-12)
    y0_ = y0.clone().requires_grad_()
    t_ = t.clone().requires_grad_()
    ys = torchdiffeq.odeint_adjoint(mlp_field, y0_, t_, rtol=1e-10, atol=1e-12)
    loss = (ys ** 2).sum() + ys[-1].sin().sum()
    ref = torch.autograd.grad(loss, [y0_, t_, *mlp_field.parameters()])
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_time_dependent_field_and_reverse_time():
    W = torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64) * 0.5)

    def func(t, y):
        return torch.tanh(y @ W) * torch.cos(t)

    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.linspace(1.0, -0.5, 4, dtype=torch.float64)
    results = []
    for gradient in ("direct", "backsolve"):
        y0_ = y0.clone().requires_grad_()
        t_ = t.clone().requires_grad_()
        ys = odegrad.odeint(func, y0_, t_, gradient=gradient, rtol=1e-10, atol=1e-12, params=[W])
        results.append(torch.autograd.grad(ys.pow(2).sum(), [y0_, t_, W]))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_time_gradient_matches_finite_differences(mlp_field):
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.2], dtype=torch.float64)
    for gradient in ("direct", "backsolve"):
        t_ = t.clone().requires_grad_()
        ys = odegrad.odeint(mlp_field, y0, t_, gradient=gradient, rtol=1e-11, atol=1e-13)
        (g,) = torch.autograd.grad(ys.pow(2).sum(), [t_])
        eps = 1e-5
        for i in range(3):
            dt = torch.zeros(3, dtype=torch.float64)
            dt[i] = eps
            with torch.no_grad():
                up = odegrad.odeint(mlp_field, y0, t + dt, rtol=1e-12, atol=1e-14).pow(2).sum()
                down = odegrad.odeint(mlp_field, y0, t - dt, rtol=1e-12, atol=1e-14).pow(2).sum()
            assert abs(float(g[i]) - float((up - down) / (2 * eps))) < 1e-5


def test_tuple_state_gradients_agree():
    k = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def func(t, state):
        x, v = state
        return v, -k * x - 0.1 * v

    x0 = torch.randn(3, dtype=torch.float64)
    v0 = torch.randn(3, dtype=torch.float64)
    t = torch.linspace(0, 2, 3, dtype=torch.float64)
    results = []
    for gradient in ("direct", "backsolve"):
        x0_, v0_ = x0.clone().requires_grad_(), v0.clone().requires_grad_()
        xs, vs = odegrad.odeint(func, (x0_, v0_), t, gradient=gradient, rtol=1e-10, atol=1e-12, params=[k])
        results.append(torch.autograd.grad(xs.pow(2).sum() + vs[-1].sum(), [x0_, v0_, k]))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_unused_parameters_get_zero_gradients():
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used = torch.nn.Linear(2, 2).double()
            self.unused = torch.nn.Linear(2, 2).double()

        def forward(self, t, y):
            return self.used(y)

    func = Field()
    ys = odegrad.odeint(func, torch.randn(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                        gradient="backsolve")
    grads = torch.autograd.grad(ys.sum(), list(func.parameters()))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads[2:])
    assert all(g.abs().sum() > 0 for g in grads[:2])


def test_backward_nfe_is_recorded(mlp_field):
    sol = odegrad.solve(mlp_field, torch.randn(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                        gradient="backsolve")
    assert sol.stats.nfe_backward == 0
    sol.ys.sum().backward()
    assert sol.stats.nfe_backward > 0


def test_seminorm_takes_fewer_backward_steps():
    torch.manual_seed(1)
    func = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2)).double()
    field = lambda t, y: func(y)
    params = list(func.parameters())
    y0 = torch.randn(16, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    nfe = {}
    for name, gradient in (("full", Backsolve()), ("semi", Backsolve(seminorm=True))):
        sol = odegrad.solve(field, y0, t, gradient=gradient, rtol=1e-6, atol=1e-8, params=params)
        sol.ys.pow(2).sum().backward()
        nfe[name] = sol.stats.nfe_backward
    assert nfe["semi"] <= nfe["full"]


@pytest.mark.parametrize("gradient", ["backsolve", "gq", "interp"])
def test_adjoint_backends_follow_an_explicit_fixed_grid(gradient, mlp_field):
    """The backward solve of each segment takes the forward grid's steps inside it."""
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.2], dtype=torch.float64)
    options = {"grid": [0.05 * k for k in range(24)] + [1.2]}
    direct = _grads(mlp_field, y0, t, "direct", "rk4", options=options)
    adjoint = _grads(mlp_field, y0, t, gradient, "rk4", options=options)
    for a, b in zip(direct, adjoint):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_registered_adjoint_backend_is_reached_from_odeint_adjoint(monkeypatch):
    """One registry serves odeint and odeint_adjoint: a backend added with register_backend is
    built by both, odeint_adjoint's adjoint_* settings applied to it."""
    from odegrad.gradients import Backsolve, register_backend

    class Counting(Backsolve):
        built: list = []

        def backward_pass(self, problem, ys, context, grad_ys):
            Counting.built.append((self.rtol, self.seminorm))
            return super().backward_pass(problem, ys, context, grad_ys)

    monkeypatch.setattr(odegrad.gradients, "_REGISTRY", dict(odegrad.gradients._REGISTRY))
    register_backend("counting", Counting)
    field = torch.nn.Linear(2, 2).double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    ys = odegrad.odeint_adjoint(lambda t, y: field(y), y0, t, gradient="counting", adjoint_rtol=1e-8,
                                adjoint_options={"norm": "seminorm"}, adjoint_params=tuple(field.parameters()))
    ys.sum().backward()
    assert Counting.built == [(1e-8, True)]
    expected = odegrad.odeint_adjoint(lambda t, y: field(y), y0, t, adjoint_rtol=1e-8,
                                      adjoint_params=tuple(field.parameters()))
    (expected_grad,) = torch.autograd.grad(expected.sum(), y0)
    torch.testing.assert_close(y0.grad, expected_grad)
    with pytest.raises(odegrad.errors.InvalidInput, match="'counting'"):
        odegrad.odeint_adjoint(lambda t, y: field(y), y0, t, gradient="direct")
