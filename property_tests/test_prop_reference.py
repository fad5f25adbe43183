"""(1) Every pair's gradients — direct included — match a converged reference that no pair under
test computed (RK4 backpropagation refined until converged), per gradient group relative to the
reference's size. Fixed-step pairs are held by convergence: their Richardson value from nested
grids h and h/2 must meet the error model at order p + 1."""

from __future__ import annotations

from hypothesis import given

from odegrad.testing import RandomProjectionLoss, converged_gradients, reference_error, run_converging
from odegrad.testing.strategies import ODECase, ode_cases

from ._support import Check, check_pairs, tolerance_of


@given(case=ode_cases())
def test_gradients_match_a_converged_reference(case: ODECase):
    loss = RandomProjectionLoss(case.seed)
    reference = converged_gradients(case.func, case.y0, case.t, loss)

    def compare(method, gradient, settings):
        run = run_converging(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
        error, where = reference_error(run.grads, reference.grads)
        return [Check("gradients vs converged reference", error,
                      tolerance_of(method, settings, case, run) + reference.change, where)]

    check_pairs("1 converged reference", case, compare)
