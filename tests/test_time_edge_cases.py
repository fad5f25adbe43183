"""Output times at or next to zero: subnormal and signed-zero times, reverse solves to or from 0,
and forced stops a sliver away from a step (issue 18, item 18a).

The deeper property run found ``interp`` with bosh3, dopri5 and tsit5 raising StepSizeUnderflow
"reached t=0 of t_end=4.9e-324": hypothesis drew start times 4.9e-324, -1.1e-308 and -2.2e-308,
which the case description printed (rounded to 6 decimals) as 0.0 / -0.0. The backward segment
that ended there stopped at t = 0 and was then left a subnormal distance, which the adaptive
controller took for a step-size underflow. Every backend must give the exact gradients there.
"""

import pytest
import torch

import odegrad
from odegrad.testing import (
    LinearField,
    RandomProjectionLoss,
    expected_error,
    linear_gradients,
    linear_solution,
    relative_disagreement,
    run_pair,
)
from odegrad.testing import accurate_settings as settings_for
from odegrad.testing.strategies import ODECase

D = torch.float64
METHODS = ("bosh3", "dopri5", "tsit5")
BACKENDS = ("interp", "backsolve", "gq", "direct")

# (rate a of y' = a·y, t) of the three failing examples, with their true start times, and the
# same grids starting at 0.0 / -0.0 as the report printed them.
CASES = {
    "zero field, reverse solve from 4.9e-324": (0.0, [5e-324, -1.0]),
    "zero field, reverse solve from 0": (0.0, [0.0, -1.0]),
    "zero field, t from -1.1e-308": (0.0, [-1.1e-308, 0.5, 1.0]),
    "zero field, t from -0.0": (0.0, [-0.0, 0.5, 1.0]),
    "decay, t from -2.2e-308": (-1.5, [-2.2e-308, 0.0139, 0.05, 0.09, 0.125]),
    "decay, t from -0.0": (-1.5, [-0.0, 0.0139, 0.05, 0.09, 0.125]),
}


def _errors(field: LinearField, y0: torch.Tensor, t: torch.Tensor, method: str, gradient: str,
            options: dict | None = None):
    """(value error, gradient error, tolerance) of one pair against the exact solution."""
    loss = RandomProjectionLoss(0)
    span = abs(float(t[-1] - t[0]))
    settings = settings_for(method, span, float(field.rate_scale))
    settings.options.update(options or {})
    run = run_pair(field, y0, t, method, gradient, settings=settings, loss=loss)
    exact_ys = linear_solution(field.A, y0, t).detach()
    value_error = float((run.ys - exact_ys).abs().max() / exact_ys.abs().max())
    gradient_error, _ = relative_disagreement(run.grads, linear_gradients(field.A, y0, t, loss))
    tolerance = expected_error(method, settings, span, float(field.rate_scale), steps=2 * run.steps)
    return value_error, gradient_error, tolerance


@pytest.mark.parametrize("gradient", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_segments_ending_at_or_next_to_zero(case, method, gradient):
    rate, times = CASES[case]
    field = LinearField(torch.full((1, 1), rate, dtype=D))
    value_error, gradient_error, tolerance = _errors(
        field, torch.tensor([0.7], dtype=D), torch.tensor(times, dtype=D), method, gradient)
    assert value_error <= tolerance and gradient_error <= tolerance


@pytest.mark.parametrize("gradient", BACKENDS)
@pytest.mark.parametrize("times", [[-5e-324, 1.0], [-1.0, 5e-324, 1.0], [1.0, 2.0]])
def test_a_stop_a_sliver_past_a_step_does_not_throttle_the_steps_after_it(times, gradient):
    """A jump at 0.0 next to an output time of ±5e-324 (or one ulp past t0 = 1) forces a step of
    a subnormal (or one-ulp) length; the steps after it keep the controller's proposal."""
    field = LinearField(torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=D))
    y0, t = torch.tensor([1.0, 0.5], dtype=D), torch.tensor(times, dtype=D)
    sliver = 0.0 if times[0] != 1.0 else 1.0 + 2.0**-52
    value_error, gradient_error, tolerance = _errors(field, y0, t, "dopri5", gradient, {"jump_t": [sliver]})
    assert value_error <= tolerance and gradient_error <= tolerance
    with_jump = odegrad.solve(field, y0, t, method="dopri5", options={"jump_t": [sliver]}).stats
    plain = odegrad.solve(field, y0, t, method="dopri5").stats
    assert with_jump.steps_accepted <= plain.steps_accepted + 2  # the sliver and one more at most


def test_case_description_shows_subnormal_times():
    case = ODECase(LinearField(torch.zeros(1, 1, dtype=D)), torch.ones(1, dtype=D),
                   torch.tensor([-1.1e-308, 0.5], dtype=D), seed=0)
    assert "-1.1e-308" in case.describe()
