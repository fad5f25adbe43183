"""(7) Tightening the tolerance (adaptive methods) or the step (fixed-step methods) does not
increase the error against the exact solution of a linear ODE beyond the tighter setting's own
error bound."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from odegrad.solvers import get_solver
from odegrad.testing import RandomProjectionLoss, expected_error, run_pair
from odegrad.testing.strategies import ODECase, linear_fields, ode_cases

from ._support import Check, check_pairs, exact_errors


@given(case=ode_cases(fields=linear_fields(), tuple_states=st.just(False)),
       coarsening=st.integers(1, 3))
def test_tighter_tolerance_is_not_worse(case: ODECase, coarsening: int):
    loss = RandomProjectionLoss(case.seed)

    def compare(method, gradient, tight):
        if get_solver(method).error_estimate:
            factor = 10.0 ** coarsening
            loose = replace(tight, rtol=tight.rtol * factor, atol=tight.atol * factor)
        else:
            loose = replace(tight, options={"step_size": tight.options["step_size"] * 2 ** coarsening})
        errors = {}
        for name, settings in (("loose", loose), ("tight", tight)):
            run = run_pair(case.func, case.y0, case.t, method, gradient, settings=settings, loss=loss)
            value_error, gradient_error, _ = exact_errors(case, run)
            errors[name] = (max(value_error, gradient_error), run.steps)
        noise = expected_error(method, tight, case.span, case.scale, steps=2 * errors["tight"][1])
        increase = errors["tight"][0] - errors["loose"][0]
        return [Check(f"error increase from {loose.describe()} to {tight.describe()} "
                      f"(errors {errors['loose'][0]:.2e} -> {errors['tight'][0]:.2e})",
                      increase, noise, "values+gradients")]

    check_pairs("7 tolerance monotonicity", case, compare)
