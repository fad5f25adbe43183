"""Every bad input gets an odegrad.errors exception naming the argument, value and expectation."""

import pytest
import torch

import odegrad
from odegrad.errors import (
    InvalidInput,
    MaxStepsExceeded,
    NonFiniteValue,
    OdegradError,
    StepSizeUnderflow,
    UnknownName,
    UnsupportedCombination,
)


def decay(t, y):
    return -y


Y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
T = torch.linspace(0, 1, 3, dtype=torch.float64)


@pytest.mark.parametrize("t,fragment", [
    (torch.tensor([0.0, 0.5, 0.5, 1.0]), "repeats a value"),
    (torch.tensor([0.0, 0.5, 0.2]), "changes direction"),
    (torch.tensor([1.0, 0.5, 0.7]), "changes direction"),
])
def test_bad_time_grids(t, fragment):
    with pytest.raises(InvalidInput, match=fragment) as info:
        odegrad.odeint(decay, Y0, t.double())
    assert info.value.argument == "t"


def test_decreasing_t_is_valid():
    ys = odegrad.odeint(decay, Y0, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(ys[-1], Y0 * torch.e, rtol=1e-6)


@pytest.mark.parametrize("t,fragment", [
    (torch.zeros(2, 2), "per-sample t"),  # a 2-D t asks for per-sample solving: its rows are checked
    (torch.zeros(2, 2, 2), "t shape"),
    (torch.tensor([0, 1]), "t dtype"),
    (torch.tensor([0.0, float("nan")]), "finite times"),
    (torch.tensor([]), "t shape"),
])
def test_malformed_t(t, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        odegrad.odeint(decay, Y0, t)


def test_t_on_other_device():
    with pytest.raises(InvalidInput, match="t device"):
        odegrad.odeint(decay, Y0, torch.tensor([0.0, 1.0], device="meta"))


def test_func_output_shape_and_dtype_mismatch():
    with pytest.raises(InvalidInput, match="func output shape"):
        odegrad.odeint(lambda t, y: y[:1], Y0, T)
    with pytest.raises(InvalidInput, match="func output dtype"):
        odegrad.odeint(lambda t, y: y.long(), Y0, T)
    with pytest.raises(InvalidInput, match="func output"):
        odegrad.odeint(lambda t, y: 1.0, Y0, T)


def test_tuple_func_output_mismatch():
    with pytest.raises(InvalidInput, match=r"func output\[1\] shape"):
        odegrad.odeint(lambda t, s: (s[0], s[1][:1]), (Y0, Y0), T)
    with pytest.raises(InvalidInput, match="tuple of 2"):
        odegrad.odeint(lambda t, s: s[0], (Y0, Y0), T)


def test_bad_y0():
    with pytest.raises(InvalidInput, match="y0 dtype"):
        odegrad.odeint(decay, torch.tensor([1, 2]), T)
    with pytest.raises(InvalidInput, match="y0"):
        odegrad.odeint(decay, [1.0, 2.0], T)
    with pytest.raises(InvalidInput, match=r"y0\[1\] dtype/device"):
        odegrad.odeint(lambda t, s: s, (Y0, Y0.float()), T)


def test_nan_in_y0_names_batch_entries():
    y0 = torch.ones(4, 2, dtype=torch.float64)
    y0[2, 1] = float("nan")
    with pytest.raises(NonFiniteValue, match="batch entries 2") as info:
        odegrad.odeint(decay, y0, T)
    assert info.value.bad_indices == [2]


@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"step_size": 0.01})])
def test_nan_produced_by_func_reports_time(method, options):
    def blows_up(t, y):
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    with pytest.raises(NonFiniteValue) as info:
        odegrad.odeint(blows_up, Y0, T, method=method, options=options)
    assert info.value.t is not None and 0.4 <= info.value.t <= 1.0
    assert info.value.nfe > 0
    assert "t=" in str(info.value)


def test_step_size_underflow_reports_t_and_nfe():
    # y' = y² blows up at t = 1 for y0 = 1.
    with pytest.raises((StepSizeUnderflow, NonFiniteValue)) as info:
        odegrad.odeint(lambda t, y: y ** 2, torch.tensor([1.0], dtype=torch.float64),
                       torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert 0.9 < info.value.t <= 1.0 + 1e-6
    assert info.value.nfe > 10


def test_max_steps_exceeded_reports_t_and_nfe():
    with pytest.raises(MaxStepsExceeded, match="max_steps=5") as info:
        odegrad.odeint(lambda t, y: torch.cos(50 * t) * y, Y0, torch.tensor([0.0, 10.0], dtype=torch.float64),
                       options={"max_steps": 5})
    assert 0 < info.value.t < 10 and info.value.nfe > 5 and info.value.t_end == 10.0
    with pytest.raises(MaxStepsExceeded):
        odegrad.odeint(decay, Y0, T, method="euler", options={"step_size": 0.001, "max_steps": 10})


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownName, match="'dopri5'") as info:
        odegrad.odeint(decay, Y0, T, method="dopri6")
    assert "dopri5" in info.value.valid
    with pytest.raises(UnknownName, match="'backsolve'"):
        odegrad.odeint(decay, Y0, T, gradient="adjoint!")
    with pytest.raises(UnknownName, match="torchdiffeq:dopri5"):
        odegrad.odeint(decay, Y0, T, method="torchdiffeq:nope")
    with pytest.raises(InvalidInput, match="method"):
        odegrad.odeint(decay, Y0, T, method=5)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"rtol": -1.0}, "rtol"),
    ({"atol": float("nan")}, "atol"),
    ({"rtol": 0.0, "atol": 0.0}, "rtol/atol"),
    ({"rtol": "tight"}, "rtol"),
    ({"options": {"max_steps": 0}}, "max_steps"),
    ({"options": {"max_steps": 2.5}}, "max_steps"),
    ({"options": {"first_step": -0.1}}, "first_step"),
    ({"options": {"safety": 2.0}}, "safety"),
    ({"options": {"norm": 3}}, "norm"),
    ({"options": {"controller": "pi"}}, "controller"),
    ({"options": [("step_size", 1)]}, "options"),
    ({"method": "rk4", "options": {"step_size": 0}}, "step_size"),
    ({"method": "rk4", "options": {"grid": [0.0, 0.6, 0.5, 1.0]}}, "grid"),
    ({"method": "rk4", "options": {"grid": [0.1, 1.0]}}, "grid"),
])
def test_invalid_tolerances_and_options(kwargs, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        odegrad.odeint(decay, Y0, T, **kwargs)


def test_unknown_option_key():
    with pytest.raises(UnknownName, match="step_size"):
        odegrad.odeint(decay, Y0, T, options={"stepsize": 0.1})


def test_options_for_the_wrong_kind_of_method():
    with pytest.raises(UnsupportedCombination, match="step_size"):
        odegrad.odeint(decay, Y0, T, method="dopri5", options={"step_size": 0.1})
    with pytest.raises(UnsupportedCombination, match="first_step"):
        odegrad.odeint(decay, Y0, T, method="rk4", options={"first_step": 0.1})


def test_bad_params_and_func():
    with pytest.raises(InvalidInput, match=r"params\[0\]"):
        odegrad.odeint(decay, Y0, T, params=[1.0])
    with pytest.raises(InvalidInput, match="func"):
        odegrad.odeint("not callable", Y0, T)
    with pytest.raises(InvalidInput, match="Backsolve rtol"):
        odegrad.gradients.Backsolve(rtol=-1)


def test_field_independent_of_y_with_adjoint_is_valid():
    """dy/dt = g(t) has a zero y-VJP: dL/dy0 flows straight through (issue 14, item 3)."""
    y0 = Y0.clone().requires_grad_()
    ys = odegrad.odeint(lambda t, y: torch.ones_like(y), y0, T, gradient="backsolve")
    ys.sum().backward()
    assert torch.equal(y0.grad, torch.full_like(Y0, len(T)))


def test_all_errors_share_the_base_class():
    for cls in (InvalidInput, UnknownName, NonFiniteValue, StepSizeUnderflow, MaxStepsExceeded,
                UnsupportedCombination):
        assert issubclass(cls, OdegradError)
