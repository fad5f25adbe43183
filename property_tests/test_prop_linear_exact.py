"""(2) For linear and affine ODEs every pair's values and gradients match the exact solution
(matrix exponential) within the pair's error bound — for fixed-step pairs, their Richardson value
from nested grids h and h/2 within the bound at order p + 1."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from odegrad.testing import RandomProjectionLoss, run_converging
from odegrad.testing.strategies import ODECase, linear_fields, ode_cases

from ._support import Check, check_pairs, exact_errors, tolerance_of


@given(case=ode_cases(fields=linear_fields(), tuple_states=st.just(False)))
def test_exact_linear_gradients(case: ODECase):
    loss = RandomProjectionLoss(case.seed)

    def compare(method, gradient, settings):
        run = run_converging(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
        tolerance = tolerance_of(method, settings, case, run)
        value_error, gradient_error, where = exact_errors(case, run)
        return [Check("values vs exact", value_error, tolerance, "ys"),
                Check("gradients vs exact", gradient_error, tolerance, where)]

    check_pairs("2 exact linear gradients", case, compare)
