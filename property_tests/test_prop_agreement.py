"""(1) Every gradient backend agrees with direct backpropagation through the same integrator."""

from __future__ import annotations

from hypothesis import given

from odegrad.testing import RandomProjectionLoss, expected_error, relative_disagreement, run_pair
from odegrad.testing.strategies import ODECase, ode_cases

from ._support import PAIRS, Check, check_pairs


@given(case=ode_cases())
def test_backends_agree_with_direct(case: ODECase):
    loss = RandomProjectionLoss(case.seed)
    direct = {}

    def compare(method, gradient, settings):
        if method not in direct:
            direct[method] = run_pair(case.func, case.y0, case.t, method, "direct", settings=settings, loss=loss)
        reference = direct[method]
        run = run_pair(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
        disagreement, where = relative_disagreement(run.grads, reference.grads)
        tolerance = (expected_error(method, settings, case.span, case.scale, steps=2 * run.steps)
                     + expected_error(method, settings, case.span, case.scale, steps=2 * reference.steps))
        return [Check("gradients vs direct", disagreement, tolerance, where)]

    check_pairs("1 agreement with direct", case, compare,
                pairs=[(m, g) for m, g in PAIRS if g != "direct"])
