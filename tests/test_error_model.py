"""The fixed-step error model counts the backward solve of a gradient (issue 18, item 18b).

euler/backsolve on an oscillatory affine field exceeded the model's bound in the deeper property
run. The gradient errors there are the discretisation's (first order in h, alike for all
backends); the single-solve bound ignored that a gradient adds a backward solve's local errors
to the forward's. See odegrad/testing/_tolerances.py.
"""

import pytest
import torch

from odegrad.testing import (
    ROUNDOFF,
    LinearField,
    RandomProjectionLoss,
    Settings,
    accurate_settings,
    expected_error,
    linear_gradients,
    relative_disagreement,
    run_pair,
)

D = torch.float64
# Eigenvalues ±0.89i (a rotation, non-normal: spectral norm 1.11); drawn by hypothesis.target.
A = torch.tensor([[0.16803666567865294, -1.023563538091452],
                  [0.8015977867216899, -0.16803666567865294]], dtype=D)
B = torch.randn(2, generator=torch.Generator().manual_seed(2532608), dtype=D)
Y0 = torch.randn(2, generator=torch.Generator().manual_seed(0), dtype=D)
T = torch.tensor([0.890084, 1.790084], dtype=D)
FIELD = LinearField(A, B)
SPAN, SCALE = float(T[-1] - T[0]), float(FIELD.rate_scale)


def _gradient_error(gradient: str, settings: Settings) -> tuple[float, int]:
    loss = RandomProjectionLoss(0)
    run = run_pair(FIELD, Y0, T, "euler", gradient, settings=settings, loss=loss)
    error, _ = relative_disagreement(run.grads, linear_gradients(FIELD.A, Y0, T, loss, FIELD.b))
    return error, run.steps


@pytest.mark.parametrize("gradient", ["direct", "backsolve", "gq", "interp"])
def test_euler_gradients_on_an_oscillatory_affine_field_meet_the_bound(gradient):
    settings = accurate_settings("euler", SPAN, SCALE)
    error, steps = _gradient_error(gradient, settings)
    assert error <= expected_error("euler", settings, SPAN, SCALE, steps=2 * steps)


def test_the_gradient_error_is_first_order_discretisation_error_of_two_solves():
    settings = accurate_settings("euler", SPAN, SCALE)
    h = settings.options["step_size"]
    error, steps = _gradient_error("backsolve", settings)
    finer, _ = _gradient_error("backsolve", Settings(options={"step_size": h / 2}))
    assert error / finer == pytest.approx(2.0, rel=0.05)  # halves with h: discretisation
    # more than one solve's worth of error, within forward plus backward solve's
    assert error > expected_error("euler", settings, SPAN, SCALE)
    assert error <= expected_error("euler", settings, SPAN, SCALE, steps=2 * steps)


def test_fixed_step_bound_grows_with_the_time_stepped_over():
    settings = accurate_settings("euler", 1.0, 1.0)
    steps = round(1.0 / settings.options["step_size"])
    one = expected_error("euler", settings, 1.0, 1.0) - ROUNDOFF
    assert expected_error("euler", settings, 1.0, 1.0, steps=steps) - ROUNDOFF == pytest.approx(one)
    assert expected_error("euler", settings, 1.0, 1.0, steps=2 * steps) - ROUNDOFF == pytest.approx(2 * one)
