"""(6) Gradients with respect to the output times t match finite differences in t."""

from __future__ import annotations

from hypothesis import given

from odegrad.testing import GROUP_FLOOR, RandomProjectionLoss, finite_differences, run_converging
from odegrad.testing.strategies import ODECase, ode_cases

from ._support import Check, check_pairs, tolerance_of


@given(case=ode_cases())
def test_time_gradients_match_finite_differences(case: ODECase):
    loss = RandomProjectionLoss(case.seed)
    fd = finite_differences(case.func, case.y0, case.t, loss, n_directions=2, seed=case.seed, only_t=True)

    def compare(method, gradient, settings):
        run = run_converging(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
        # dL/dt_i = f(t_i, y_i)·dL/dy_i can cancel to ~0; measure it on the scale of the other
        # gradients then, like every other group (see relative_disagreement).
        floor = GROUP_FLOOR * max(float(g.norm()) for g in run.grads.values())
        return [Check("dL/dt vs finite differences", fd.error_of(run.grads, floor=floor),
                      tolerance_of(method, settings, case, run), "t")]

    check_pairs("6 t-gradients vs finite differences", case, compare)
