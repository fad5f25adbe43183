"""Regression tests for silent wrong results and raw exceptions (issue 18): each input here once
gave a wrong answer or a bare torch/Python error; now it gives the right answer or an odegrad error."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import odegrad
from odegrad.errors import (
    InvalidInput,
    NonFiniteValue,
    OdegradError,
    ReverseSolveDrift,
    UnsupportedCombination,
)
from odegrad.gradients import Backsolve, GaussQuadrature
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import LearnedMidpoint

D = torch.float64
ADJOINT = ("backsolve", "gq", "interp")
T = torch.tensor([0.0, 0.5, 1.0], dtype=D)


def _w():
    return torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=D, requires_grad=True)


@pytest.mark.parametrize("gradient", ADJOINT)
@pytest.mark.parametrize("as_", ["tensor", "list", "generator"])
def test_params_as_bare_tensor_list_or_iterable_give_the_direct_gradient(gradient, as_):
    w = _w()
    y0 = torch.tensor([[1.0, 0.5]], dtype=D)
    field = lambda t, y: y @ w.T
    odegrad.odeint(field, y0, T)[-1].sum().backward()
    expected, w.grad = w.grad.clone(), None
    params = {"tensor": w, "list": [w], "generator": (p for p in [w])}[as_]
    odegrad.odeint(field, y0, T, gradient=gradient, params=params)[-1].sum().backward()
    torch.testing.assert_close(w.grad, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("gradient", ADJOINT)
def test_params_that_do_not_require_grad_are_refused(gradient):
    with pytest.raises(InvalidInput, match="none with requires_grad=True"):
        odegrad.odeint(lambda t, y: -y, torch.ones(2, dtype=D), T, gradient=gradient,
                       params=torch.ones(2, dtype=D))
    with pytest.raises(InvalidInput, match="params"):
        odegrad.odeint(lambda t, y: -y, torch.ones(2, dtype=D), T, gradient=gradient, params=3)


@pytest.mark.parametrize("gradient", ADJOINT)
def test_closure_with_trainable_tensors_and_no_params_is_refused(gradient):
    net = nn.Linear(2, 2).double()
    for field in (lambda t, y: net(y), net.forward):
        for y0 in (torch.ones(1, 2, dtype=D), torch.ones(1, 2, dtype=D, requires_grad=True)):
            with pytest.raises(InvalidInput, match="params") as info:
                odegrad.odeint(field, y0, T, gradient=gradient)
            assert "would get no gradient" in str(info.value)
    # an explicit params, an nn.Module func or the direct backend are fine
    odegrad.odeint(lambda t, y: net(y), torch.ones(1, 2, dtype=D), T, gradient=gradient, params=net.parameters())
    odegrad.odeint(lambda t, y: net(y), torch.ones(1, 2, dtype=D), T)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_adaptive_solves_refuse_unresolvable_tolerances(method, dtype):
    y0 = torch.ones(1, dtype=dtype)
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(InvalidInput, match=str(dtype)):
        odegrad.odeint(lambda t, y: -y, y0, t, method=method)
    rtol = 10 * torch.finfo(dtype).eps
    y1 = odegrad.odeint(lambda t, y: -y, y0, t, method=method, rtol=rtol, atol=1e-3)[-1]
    assert abs(float(y1) - math.exp(-1)) < 3 * rtol  # no stall: the right answer to the tolerance


def test_tlnode_checks_its_inputs_like_odeint():
    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2).double()

        def forward(self, t, y):
            return torch.tanh(self.lin(y))

    model = TLNODE(Field(), remainder=LearnedMidpoint(2).double())
    with pytest.raises(NonFiniteValue):
        model(torch.tensor([[math.nan, 0.0]], dtype=D))
    with pytest.raises(InvalidInput, match="t0"):
        model(torch.zeros(1, 2, dtype=D), t0=math.nan)
    with pytest.raises(InvalidInput, match="y0"):
        model([[0.0, 1.0]])
    with pytest.raises(InvalidInput, match="y0 shape"):
        model(torch.zeros(1, 3, dtype=D))
    with pytest.raises(InvalidInput, match="y0 shape"):
        TLNODE(Field())(torch.zeros(1, 3, dtype=D))  # no remainder: func's own shape error, named
    with pytest.raises(InvalidInput, match="intervals"):
        model.trajectory(torch.zeros(1, 2, dtype=D), -1)
    with pytest.raises(InvalidInput, match="steps"):
        TLNODE(Field(), steps=10 ** 9)
    with pytest.raises(InvalidInput, match="t0"):
        TLNODE(Field(), t0="a")


def test_every_output_shape_of_func_is_checked():
    calls = []

    def field(t, y):
        calls.append(t)
        return -y if len(calls) == 1 else -y[:1]  # broadcastable wrong shape after the first call

    with pytest.raises(InvalidInput, match="func output shape"):
        odegrad.odeint(field, torch.ones(2, 1, dtype=D), T, method="rk4", options={"step_size": 0.1})


def test_conflicting_option_aliases_are_refused():
    with pytest.raises(InvalidInput, match="max_num_steps"):
        odegrad.odeint(lambda t, y: -y, torch.ones(1, dtype=D), T,
                       options={"max_steps": 5, "max_num_steps": 100000})


@pytest.mark.parametrize("gradient", ADJOINT)
def test_non_finite_incoming_gradient_is_named_as_such(gradient):
    w = _w()
    ys = odegrad.odeint(lambda t, y: y @ w.T, torch.ones(1, 2, dtype=D), T, gradient=gradient, params=w)
    with pytest.raises(NonFiniteValue, match="incoming gradient") as info:
        (ys * math.nan).sum().backward()
    assert info.value.phase == "incoming gradient"


@pytest.mark.parametrize("gradient", ["backsolve", "gq"])
def test_non_finite_adjoint_system_is_named_as_the_backward_pass(gradient):
    w = _w()

    def field(t, y):  # finite forward; its Jacobian is NaN, so only the adjoint system sees NaN
        return y @ w.T + 0.0 * torch.sqrt(-(y - y.detach()) - 1e-300).nan_to_num(0.0)

    ys = odegrad.odeint(field, torch.ones(1, 2, dtype=D), T, gradient=gradient, params=w)
    with pytest.raises(NonFiniteValue, match="backward pass") as info:
        ys.sum().backward()
    assert info.value.phase == "backward" and info.value.t is not None


def test_direct_backward_check_is_opt_in():
    w = _w()
    ys = odegrad.odeint(lambda t, y: y @ w.T, torch.ones(1, 2, dtype=D), T)
    (ys * math.nan).sum().backward()
    assert torch.isnan(w.grad).all()  # documented: plain autograd propagates NaN silently
    w.grad = None
    ys = odegrad.odeint(lambda t, y: y @ w.T, torch.ones(1, 2, dtype=D), T, options={"check_backward": True})
    with pytest.raises(NonFiniteValue, match="incoming gradient"):
        (ys * math.nan).sum().backward()

    def field(t, y):  # finite values, NaN Jacobian
        return y @ w.T + 0.0 * torch.sqrt(-(y - y.detach()) - 1e-300).nan_to_num(0.0)

    ys = odegrad.odeint(field, torch.ones(1, 2, dtype=D), T, options={"check_backward": True})
    with pytest.raises(NonFiniteValue, match="func's output at t=") as info:
        ys.sum().backward()
    assert info.value.phase == "backward"
    with pytest.raises(InvalidInput, match="check_backward"):
        odegrad.odeint(lambda t, y: -y, torch.ones(1, dtype=D), T, options={"check_backward": "yes"})


@pytest.mark.parametrize("method, options", [("rk4", {"step_size": 1e-300}), ("rk4", {"step_size": 1e-7})])
def test_fixed_grid_too_fine_fails_before_building_it(method, options):
    with pytest.raises(odegrad.errors.MaxStepsExceeded):
        odegrad.odeint(lambda t, y: -y, torch.ones(1, dtype=D), T, method=method, options=options)


@pytest.mark.parametrize("gradient", ["direct", *ADJOINT])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("shape", [(0, 2), (0,)])
def test_empty_states_give_empty_results(gradient, method, shape):
    w = _w()
    y0 = torch.ones(shape, dtype=D, requires_grad=True)
    ys = odegrad.odeint(lambda t, y: y * w[0, 0], y0, T, method=method, gradient=gradient, params=w)
    assert ys.shape == (3, *shape)
    ys.sum().backward()
    assert y0.grad.shape == shape


@pytest.mark.parametrize("grid", [[], ["a", "b"], 0.5, torch.zeros(2, 2), [0.0, math.nan, 1.0]])
def test_bad_grids_are_refused_by_name(grid):
    with pytest.raises(InvalidInput, match=r"options\['grid'\]"):
        odegrad.odeint(lambda t, y: -y, torch.ones(1, dtype=D), T, method="rk4", options={"grid": grid})


def test_bad_controller_options_and_norms_are_refused_by_name():
    with pytest.raises(InvalidInput, match="safety"):
        odegrad.odeint(lambda t, y: -y, torch.ones(1, dtype=D), T, options={"safety": "0.9"})
    with pytest.raises(InvalidInput, match=r"options\['norm'\]"):
        odegrad.odeint(lambda t, y: -y, torch.ones(1, dtype=D), T, options={"norm": lambda x: (x, x)})


@pytest.mark.parametrize("t", [["a", "b"], None, [0.0], [0.0, 1.0, 0.5]])
def test_neural_ode_times_are_validated(t):
    with pytest.raises(InvalidInput, match="t"):
        NeuralODE(nn.Linear(2, 2), t=t)


@pytest.mark.parametrize("backend", [Backsolve(), GaussQuadrature()])
def test_unstable_reverse_solves_are_refused(backend):
    lam = 30.0
    a = torch.diag(torch.tensor([-1.0, -lam], dtype=D)).requires_grad_()
    ys = odegrad.odeint(lambda t, y: y @ a.T, torch.ones(2, dtype=D), torch.tensor([0.0, 2.0], dtype=D),
                        gradient=backend, params=a, rtol=1e-6, atol=1e-8)
    with pytest.raises(ReverseSolveDrift, match="interp") as info:
        ys.sum().backward()
    assert info.value.segment == 0 and info.value.drift > 1e6
    warn = type(backend)(on_drift="warn")
    ys = odegrad.odeint(lambda t, y: y @ a.T, torch.ones(2, dtype=D), torch.tensor([0.0, 2.0], dtype=D),
                        gradient=warn, params=a, rtol=1e-6, atol=1e-8)
    with pytest.warns(RuntimeWarning, match="segment 0"):
        ys.sum().backward()


def test_reverse_drift_check_stays_quiet_on_stable_dynamics():
    a = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=D, requires_grad=True)  # a rotation
    for gradient in ("backsolve", "gq"):
        ys = odegrad.odeint(lambda t, y: y @ a.T, torch.ones(2, dtype=D), torch.linspace(0, 5, 6, dtype=D),
                            gradient=gradient, params=a)
        ys.sum().backward()


def test_errors_are_odegrad_errors():
    for error in (InvalidInput, NonFiniteValue, ReverseSolveDrift, UnsupportedCombination):
        assert issubclass(error, OdegradError)


def test_taylor_integrates_tuple_states():
    """Taylor mode passes jets through the tuple-state wrapper (found by the property suite)."""
    from odegrad.solvers import Taylor

    y0 = (torch.ones(1, dtype=D), torch.ones(1, dtype=D))
    ys = odegrad.odeint(lambda t, y: (-y[0], -2 * y[1]), y0, torch.tensor([0.0, 1.0], dtype=D),
                        method=Taylor(order=4), options={"step_size": 0.05})
    assert math.isclose(float(ys[0][-1]), math.exp(-1), rel_tol=1e-6)
    assert math.isclose(float(ys[1][-1]), math.exp(-2), rel_tol=1e-5)  # 20 steps of (0.1)^5/5! each


@pytest.mark.parametrize("gradient", ["backsolve", "gq"])
def test_reverse_drift_check_of_fixed_steps_scales_with_the_trajectory(gradient):
    """A fixed-step trajectory that passes (almost) through zero at an observation time: the
    rebuilt state misses it by the method's error on the trajectory's scale, not a drift."""
    a = torch.tensor([[-1.0]], dtype=D, requires_grad=True)
    b = torch.tensor([-0.5], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, math.log(3.0), 2.0], dtype=D)  # y = -0.5 + 1.5 e^{-t} is 0 at ln 3
    ys = odegrad.odeint(lambda tt, y: y @ a.T + b, torch.ones(1, dtype=D), t, method="euler",
                        gradient=gradient, options={"step_size": 0.01}, params=[a, b])
    assert abs(float(ys[1])) < 1e-2
    ys.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
