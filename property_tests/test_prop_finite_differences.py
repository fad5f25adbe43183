"""(3) On small random MLP fields every pair's gradient matches central finite differences of a
converged RK4 reference solve along each gradient group (one direction per group, along the
converged reference gradient's part in it: an error confined to one parameter group is measured
against that group, not diluted by ~1/√n as in a random direction) and one random direction."""

from __future__ import annotations

from hypothesis import given

from odegrad.testing import (
    GROUP_FLOOR,
    RandomProjectionLoss,
    converged_gradients,
    finite_differences,
    run_converging,
)
from odegrad.testing.strategies import ODECase, mlp_fields, ode_cases

from ._support import Check, check_pairs, tolerance_of


@given(case=ode_cases(fields=mlp_fields()))
def test_gradients_match_finite_differences(case: ODECase):
    loss = RandomProjectionLoss(case.seed)
    along = converged_gradients(case.func, case.y0, case.t, loss).grads
    fd = finite_differences(case.func, case.y0, case.t, loss, n_directions=1, seed=case.seed, along=along)
    floor = GROUP_FLOOR * max(float(g.norm()) for g in along.values())

    def compare(method, gradient, settings):
        run = run_converging(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
        return [Check("gradients vs finite differences", fd.error_of(run.grads, floor=floor, reference=along),
                      tolerance_of(method, settings, case, run), f"{len(fd.directions)} directions")]

    check_pairs("3 finite differences (MLP)", case, compare)
