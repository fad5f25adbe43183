"""(3) On small random MLP fields every pair's gradient matches central finite differences
(directional, as torch.autograd.gradcheck's fast mode) of a converged RK4 reference solve."""

from __future__ import annotations

from hypothesis import given

from odegrad.testing import RandomProjectionLoss, expected_error, finite_differences, run_pair
from odegrad.testing.strategies import ODECase, mlp_fields, ode_cases

from ._support import Check, check_pairs


@given(case=ode_cases(fields=mlp_fields()))
def test_gradients_match_finite_differences(case: ODECase):
    loss = RandomProjectionLoss(case.seed)
    fd = finite_differences(case.func, case.y0, case.t, loss, n_directions=2, seed=case.seed)

    def compare(method, gradient, settings):
        run = run_pair(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
        tolerance = expected_error(method, settings, case.span, case.scale, steps=2 * run.steps)
        return [Check("gradients vs finite differences", fd.error_of(run.grads), tolerance,
                      f"{len(fd.directions)} directions")]

    check_pairs("3 finite differences (MLP)", case, compare)
