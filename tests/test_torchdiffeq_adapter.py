"""The torchdiffeq adapter (``method="torchdiffeq:<name>"``): torchdiffeq's failures arrive as
odegrad errors with the time reached, the end time and the NFE, and every option is either passed
on to torchdiffeq or refused by name (issue 18, item 14)."""

import math

import pytest
import torch
import torchdiffeq

import odegrad
from odegrad.errors import (
    InvalidInput,
    MaxStepsExceeded,
    NonFiniteValue,
    StepSizeUnderflow,
    UnsupportedCombination,
)
from odegrad.solvers import PIController, get_solver

D = torch.float64
Y0 = torch.ones(1, dtype=D)


def decay(t, y):
    return -y


def blow_up(t, y):
    """y' = y², y(0) = 1: y = 1/(1 − t) has a pole at t = 1."""
    return y * y


def test_blow_up_is_a_step_size_underflow_with_time_and_nfe():
    with pytest.raises(StepSizeUnderflow) as info:
        odegrad.odeint(blow_up, Y0, torch.tensor([0.0, 2.0], dtype=D), method="torchdiffeq:dopri5")
    assert 0.99 < info.value.t < 1.01  # stalled at the pole
    assert info.value.t_end == 2.0
    assert info.value.nfe > 0


def test_blow_up_in_reverse_time_reports_the_time_in_the_user_frame():
    with pytest.raises(StepSizeUnderflow) as info:
        odegrad.odeint(lambda t, y: -y * y, Y0, torch.tensor([0.0, -2.0], dtype=D),
                       method="torchdiffeq:bosh3")
    assert -1.01 < info.value.t < -0.99 and info.value.t_end == -2.0


def test_nan_from_func_is_a_non_finite_value_not_an_underflow():
    def poisoned(t, y):
        return y * math.nan if float(t) > 0.5 else -y

    with pytest.raises(NonFiniteValue) as info:
        odegrad.odeint(poisoned, Y0, torch.tensor([0.0, 1.0], dtype=D), method="torchdiffeq:dopri5")
    assert 0.0 <= info.value.t <= 0.5 and info.value.nfe > 0


def test_max_steps_counts_all_steps_of_the_solve():
    """odegrad's max_steps caps accepted + rejected steps over the whole solve (torchdiffeq's own
    max_num_steps counts per output interval)."""
    t = torch.linspace(0.0, 10.0, 6, dtype=D)
    stats = odegrad.solve(decay, Y0, t, method="torchdiffeq:dopri5").stats
    total = stats.steps_accepted + stats.steps_rejected
    assert total > len(t) and stats.steps_accepted > 0
    odegrad.odeint(decay, Y0, t, method="torchdiffeq:dopri5", options={"max_steps": total})
    with pytest.raises(MaxStepsExceeded) as info:
        odegrad.odeint(decay, Y0, t, method="torchdiffeq:dopri5", options={"max_steps": total - 1})
    assert 0.0 < info.value.t < 10.0 and info.value.t_end == 10.0 and info.value.nfe > 0


@pytest.mark.parametrize("grid", [[0.0, 0.5], [0.0, 1.0, 0.5, 2.0], [0.1, 2.0]])
def test_short_or_bad_grid_is_invalid_input(grid):
    with pytest.raises(InvalidInput, match=r"options\['grid'\]"):
        odegrad.odeint(decay, Y0, torch.tensor([0.0, 2.0], dtype=D), method="torchdiffeq:rk4",
                       options={"grid": grid})


def test_grid_past_the_end_is_refused_by_name():
    # odegrad's own loop steps past t[-1] and interpolates; torchdiffeq requires grid[-1] == t[-1]
    with pytest.raises(UnsupportedCombination, match=r"options\['grid'\]"):
        odegrad.odeint(decay, Y0, torch.tensor([0.0, 2.0], dtype=D), method="torchdiffeq:rk4",
                       options={"grid": [0.0, 1.0, 2.5]})


@pytest.mark.parametrize("step_size", [1e-320, 1e-7])
def test_tiny_step_size_is_max_steps_exceeded_before_any_step(step_size):
    calls = []

    def watched(t, y):
        calls.append(t)
        return -y

    with pytest.raises(MaxStepsExceeded) as info:
        odegrad.odeint(watched, Y0, torch.tensor([0.0, 2.0], dtype=D), method="torchdiffeq:rk4",
                       options={"step_size": step_size})
    assert info.value.nfe == 0 and not calls


def test_fixed_grid_matches_torchdiffeq_step_size_grid():
    t = torch.tensor([0.0, 0.35, 1.0], dtype=D)
    ours = odegrad.odeint(decay, Y0, t, method="torchdiffeq:rk4", options={"step_size": 0.1})
    theirs = torchdiffeq.odeint(decay, Y0, t, method="rk4", options={"step_size": 0.1})
    assert torch.allclose(ours, theirs, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["heun2", "fixed_adams", "euler"])
def test_fixed_grid_methods_are_fixed_step(name):
    solver = get_solver(f"torchdiffeq:{name}")
    assert not solver.error_estimate and solver.order is not None
    ys = odegrad.odeint(decay, Y0, torch.tensor([0.0, 1.0], dtype=D), method=f"torchdiffeq:{name}",
                        options={"step_size": 1e-3})
    assert abs(float(ys[-1, 0]) - math.exp(-1.0)) < 1e-3


def _steps_with(options):
    sol = odegrad.solve(decay, Y0, torch.tensor([0.0, 5.0], dtype=D), method="torchdiffeq:dopri5",
                        options=options)
    return sol.stats.nfe_forward


def test_controller_options_are_passed_on():
    t = torch.tensor([0.0, 5.0], dtype=D)
    theirs = []

    def counted(t, y):
        theirs.append(t)
        return -y

    torchdiffeq.odeint(counted, Y0, t, method="dopri5", options={"safety": 0.5, "ifactor": 3.0})
    assert _steps_with({"safety": 0.5, "ifactor": 3.0}) == len(theirs)
    assert _steps_with({"safety": 0.5, "ifactor": 3.0}) != _steps_with({})


def test_pi_gains_torchdiffeq_lacks_are_refused_by_name():
    with pytest.raises(UnsupportedCombination, match=r"options\['controller'\]"):
        odegrad.odeint(decay, Y0, torch.tensor([0.0, 1.0], dtype=D), method="torchdiffeq:dopri5",
                       options={"controller": PIController(beta1=0.7, beta2=0.4)})


def test_norm_is_passed_on():
    calls = []

    def norm(x):
        calls.append(x.shape)
        return x.abs().max()

    odegrad.odeint(decay, Y0, torch.tensor([0.0, 1.0], dtype=D), method="torchdiffeq:dopri5",
                   options={"norm": norm})
    assert calls


@pytest.mark.parametrize(("t", "stop", "jump"), [([0.0, 1.0], 0.3, 0.7), ([1.0, 0.0], 0.7, 0.3)])
def test_stops_and_jumps_are_landed_on(t, stop, jump):
    """The controller's ``stops`` (e.g. the interp backward's segment ends) become torchdiffeq's step_t,
    ``jumps`` its jump_t: steps end there, in either direction. (torchdiffeq evaluates a step's
    end one ulp towards its start, and the step after a jump one ulp past the jump.)"""
    seen = []

    def watched(time, y):
        seen.append(float(time))
        return -y

    config = odegrad.solvers.IntegrationConfig(controller=PIController(stops=(stop, jump), jumps=(jump,)))
    get_solver("torchdiffeq:dopri5").integrate(watched, Y0, torch.tensor(t, dtype=D), config)
    assert math.nextafter(stop, t[0]) in seen
    assert math.nextafter(jump, t[0]) in seen and math.nextafter(jump, t[-1]) in seen


def test_an_assertion_of_func_itself_is_not_translated():
    def failing(t, y):
        raise AssertionError("the user's own check")

    with pytest.raises(AssertionError, match="the user's own check"):
        odegrad.odeint(failing, Y0, torch.tensor([0.0, 1.0], dtype=D), method="torchdiffeq:dopri5")
