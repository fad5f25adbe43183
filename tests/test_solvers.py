"""Forward accuracy of every built-in integrator: analytic solutions, scipy, torchdiffeq."""

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

import odegrad
from odegrad.solvers import ALL_TABLEAUX, get_solver

ADAPTIVE = [name for name, tab in ALL_TABLEAUX.items() if tab.b_error is not None]
FIXED = [name for name, tab in ALL_TABLEAUX.items() if tab.b_error is None]


def oscillator(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def oscillator_exact(t, y0):
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    return torch.cat([c * y0[0] + s * y0[1], -s * y0[0] + c * y0[1]], dim=-1).reshape(len(t), 2)


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_matches_analytic_solution(method, reverse):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 6, 13, dtype=torch.float64)
    if reverse:
        t = -t
    sol = odegrad.solve(oscillator, y0, t, method=method, rtol=1e-10, atol=1e-12)
    exact = oscillator_exact(t, y0)
    assert (sol.ys - exact).abs().max() < 1e-7
    assert sol.stats.steps_accepted > 0 and sol.stats.nfe_forward > sol.stats.steps_accepted


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_convergence_order(method):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = oscillator_exact(t, y0)[-1]
    errors = [(odegrad.odeint(oscillator, y0, t, method=method, options={"step_size": h})[-1] - exact).norm()
              for h in (0.02, 0.01)]
    observed = math.log2(float(errors[0] / errors[1]))
    assert abs(observed - ALL_TABLEAUX[method].order) < 0.25


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_dense_output_between_grid_points(method):
    """Outputs inside steps come from the continuous extension, at the method's accuracy."""
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 2, 7, dtype=torch.float64)  # not on the 0.001 grid multiples exactly
    ys = odegrad.odeint(oscillator, y0, t, method=method, options={"step_size": 0.3})
    coarse_ends = odegrad.odeint(oscillator, y0, t, method=method, options={"grid": [0.0, 0.3, 0.6, 0.9, 1.2,
                                                                                     1.5, 1.8, 2.0]})
    exact = oscillator_exact(t, y0)
    # Hermite dense output is at least 3rd order: error bounded by the solver's own error scale.
    tol = {"euler": 0.6, "midpoint": 0.05, "heun": 0.05, "rk4": 1e-3}[method]
    assert (ys - exact).abs().max() < tol
    assert torch.allclose(ys[-1], coarse_ends[-1])


def test_fixed_step_without_step_size_steps_on_t():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64)
    sol = odegrad.solve(oscillator, y0, t, method="rk4")
    assert sol.stats.steps_accepted == 2
    assert torch.allclose(sol.steps.t, torch.tensor([0.0, 0.1], dtype=torch.float64))


def lorenz_like(t, y):
    return torch.stack([-0.5 * y[0] + torch.sin(t) * y[1], -y[0] ** 3 - 0.1 * y[1]])


@pytest.mark.parametrize("method", ADAPTIVE)
def test_against_scipy_solve_ivp_time_dependent(method):
    y0 = torch.tensor([1.0, -0.3], dtype=torch.float64)
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    ours = odegrad.odeint(lorenz_like, y0, t, method=method, rtol=1e-11, atol=1e-13)

    def rhs(tt, yy):
        return lorenz_like(torch.tensor(tt, dtype=torch.float64), torch.from_numpy(yy)).numpy()

    ref = solve_ivp(rhs, (0, 5), y0.numpy(), t_eval=t.numpy(), method="DOP853", rtol=1e-13, atol=1e-14)
    assert np.abs(ours.numpy() - ref.y.T).max() < 1e-8


@pytest.mark.parametrize("method,tdq", [("dopri5", "dopri5"), ("bosh3", "bosh3"), ("tsit5", "dopri5"),
                                        ("rk4", "rk4"), ("euler", "euler"), ("midpoint", "midpoint")])
def test_agrees_with_torchdiffeq(method, tdq, mlp_field):
    y0 = torch.randn(5, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    options = {"step_size": 0.05} if method in FIXED else None
    with torch.no_grad():
        ours = odegrad.odeint(mlp_field, y0, t, method=method, rtol=1e-8, atol=1e-10, options=options)
        ref = torchdiffeq.odeint(mlp_field, y0, t, method=tdq, rtol=1e-8, atol=1e-10, options=options)
        exact = torchdiffeq.odeint(mlp_field, y0, t, method="dopri8", rtol=1e-13, atol=1e-14)
    if method in ("euler", "midpoint"):  # same discrete solution on the same grid
        assert (ours - ref).abs().max() < 1e-12
    else:  # at least as accurate as torchdiffeq (its rk4 is the 3/8 rule; adaptive: same tolerances)
        assert (ours - exact).abs().max() <= 3 * (ref - exact).abs().max() + 1e-10


def test_dopri5_step_sequence_matches_torchdiffeq_nfe(mlp_field):
    y0 = torch.randn(20, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 10, dtype=torch.float64)
    calls = []

    def counted(tt, y):
        calls.append(1)
        return mlp_field(tt, y)

    with torch.no_grad():
        torchdiffeq.odeint(counted, y0, t, rtol=1e-6, atol=1e-8)
        sol = odegrad.solve(mlp_field, y0, t, rtol=1e-6, atol=1e-8)
    assert abs(sol.stats.nfe_forward - len(calls)) <= 6  # same controller; embedded pairs differ slightly


def test_tuple_state_and_batched_shapes():
    def func(t, state):
        x, v = state
        return v, -x

    x0 = torch.randn(3, 4, dtype=torch.float64)
    v0 = torch.zeros(3, 4, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    xs, vs = odegrad.odeint(func, (x0, v0), t, rtol=1e-10, atol=1e-12)
    assert xs.shape == (5, 3, 4) and vs.shape == (5, 3, 4)
    assert torch.allclose(xs, torch.cos(t)[:, None, None] * x0, atol=1e-8)


def test_single_time_returns_y0():
    y0 = torch.randn(3)
    ys = odegrad.odeint(oscillator, y0[:2], torch.tensor([0.5]))
    assert ys.shape == (1, 2) and torch.equal(ys[0], y0[:2])


def test_float32_state_float64_time():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float32)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    ys = odegrad.odeint(oscillator, y0, t, rtol=1e-6, atol=1e-8)
    assert ys.dtype == torch.float32


def test_step_records_and_dense_output():
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    solver = get_solver("dopri5")
    sol = solver.integrate(oscillator, y0, t, odegrad.solvers.IntegrationConfig(
        odegrad.solvers.PIController(rtol=1e-8, atol=1e-10)),
                           keep_dense=True)
    steps = sol.steps
    assert len(steps.t) == sol.stats.steps_accepted == len(steps.error) == len(steps.stiffness)
    assert bool((steps.error <= 1).all()) and bool((steps.error >= 0).all())
    # For y' = Jy with J a rotation, the stiffness estimate h·‖J‖ ≈ |h|.
    assert torch.allclose(steps.stiffness, steps.h.abs(), rtol=0.5)
    for tq in (0.37, 1.234, 2.9):
        exact = oscillator_exact(torch.tensor([tq], dtype=torch.float64), y0)[0]
        assert (sol.dense.evaluate(tq) - exact).abs().max() < 1e-7


def test_pi_controller_gains_change_step_sequence():
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    ctrl = odegrad.solvers.PIController(beta1=0.7, beta2=0.4)
    a = odegrad.solve(oscillator, y0, t, rtol=1e-8, atol=1e-10)
    b = odegrad.solve(oscillator, y0, t, rtol=1e-8, atol=1e-10, options={"controller": ctrl})
    assert (a.ys - b.ys).abs().max() < 1e-6
    assert not torch.equal(a.steps.h, b.steps.h)


def test_the_controller_owns_the_step_control_settings():
    """odeint's tolerances and the norm, first step and stops options land on the controller,
    beside the gains of the controller passed in options; a passed controller that sets anything
    but its gains is refused by name (odeint's arguments set the rest)."""
    gains = odegrad.solvers.PIController(beta1=0.7, beta2=0.4)
    norm = odegrad.solvers.rms_norm
    config = odegrad.solvers.make_config(
        get_solver("dopri5"), 1e-5, 1e-8,
        {"controller": gains, "first_step": 0.01, "step_t": [0.5], "jump_t": [0.7], "norm": norm})
    controller = config.controller
    assert (controller.rtol, controller.atol, controller.first_step) == (1e-5, 1e-8, 0.01)
    assert (controller.stops, controller.jumps, controller.norm) == ((0.5,), (0.7,), norm)
    assert (controller.beta1, controller.beta2) == (0.7, 0.4) and gains.rtol == 1e-7  # the given one is kept
    backward = config.for_backward(rtol=1e-9)
    assert (backward.controller.rtol, backward.controller.atol, backward.controller.stops) == (1e-9, 1e-8, ())
    assert backward.controller.jumps == (0.7,)
    with pytest.raises(odegrad.errors.InvalidInput, match=r"options\['controller'\].*only its gains"):
        odegrad.odeint(oscillator, torch.ones(2), torch.tensor([0.0, 1.0]),
                       options={"controller": odegrad.solvers.PIController(rtol=1e-3)})


@pytest.mark.parametrize(("settings", "named"), [
    ({"rtol": -1e-6}, "PIController rtol"), ({"atol": math.nan}, "PIController atol"),
    ({"first_step": 0.0}, "PIController first_step"), ({"norm": 2.0}, "PIController norm")])
def test_a_controller_refuses_bad_settings_by_name(settings, named):
    with pytest.raises(odegrad.errors.InvalidInput, match=named):
        odegrad.solvers.PIController(**settings)


def test_with_controller_refuses_a_field_the_controller_does_not_have():
    config = odegrad.solvers.IntegrationConfig()
    with pytest.raises(odegrad.errors.InvalidInput, match="with_controller field.*got rtl"):
        config.with_controller(rtl=1e-3)
    assert config.with_controller(rtol=1e-3).controller.rtol == 1e-3


def test_torchdiffeq_adapter_forward():
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    sol = odegrad.solve(oscillator, y0, t, method="torchdiffeq:dopri5", rtol=1e-10, atol=1e-12)
    assert (sol.ys - oscillator_exact(t, y0)).abs().max() < 1e-8
    assert sol.stats.nfe_forward > 0
    fixed = odegrad.odeint(oscillator, y0, t, method="torchdiffeq:rk4", options={"step_size": 0.01})
    assert (fixed - oscillator_exact(t, y0)).abs().max() < 1e-8
