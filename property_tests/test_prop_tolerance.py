"""(7) Convergence order: for fixed-step methods, halving every step of a nested grid divides the
error against the exact solution of a linear ODE by 2^p (p the method's order), up to a slack for
the next-order term: error(h/2) ≤ error(h)/2^p·(1 + slack) + round-off, for values and gradients
alike. A gradient with an error that does not shrink — a wrong backend, whatever the size of its
error — fails here on its own. A backend that fits to a tolerance (``interp``) has an error floor
of a few rtol besides round-off. Adaptive methods have no step to halve; their error against the
exact solution is bounded by their tolerance in property 2."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from odegrad.solvers import get_solver
from odegrad.testing import RandomProjectionLoss, halved_grids, method_order, run_pair
from odegrad.testing.strategies import ODECase, linear_fields, ode_cases

from ._support import Check, check_pairs, current_pairs, exact_errors, fits_to_tolerance

SLACK = 0.5
"""error(h/2) may exceed error(h)/2^p by this fraction of it: the h^{p+1} term, at hΛ ≤ 0.4, moves
the ratio of successive errors by at most ~|C_{p+1}|hΛ/|C_p| of it."""
FLOOR = 1e-11
"""Errors this small (relative) are float64 round-off over ≤ 10⁴ operations, not discretisation."""
INTERP_FLOOR = 10.0
"""A backend that fits to a tolerance has an error floor of this many rtol: its held-out check
bounds each piece's interpolation error by the tolerances, and the dev profile measured rk4/interp
gradients at 3.4e-7 with rtol 1e-7 (over several pieces and the adjoint solve)."""


@given(case=ode_cases(fields=linear_fields(), tuple_states=st.just(False)), coarsening=st.integers(0, 1))
def test_errors_shrink_at_the_methods_order(case: ODECase, coarsening: int):
    loss = RandomProjectionLoss(case.seed)

    def compare(method, gradient, settings):
        step = settings.options["step_size"] * 2 ** coarsening
        coarse, fine = halved_grids(replace(settings, options={"step_size": step}), case.t)
        errors = [exact_errors(case, run_pair(case.func, case.y0, case.t, method, gradient, settings=s, loss=loss))
                  for s in (coarse, fine)]
        shrink = 2 ** method_order(get_solver(method))
        floor = FLOOR + (INTERP_FLOOR * settings.rtol if fits_to_tolerance(gradient) else 0.0)
        (value_h, grad_h, _), (value_h2, grad_h2, where) = errors
        return [Check(f"value error {value_h:.2e} at h={step:.3g} -> {value_h2:.2e} at h/2 (order {shrink}x)",
                      value_h2, value_h / shrink * (1 + SLACK) + floor, "ys"),
                Check(f"gradient error {grad_h:.2e} at h={step:.3g} -> {grad_h2:.2e} at h/2 (order {shrink}x)",
                      grad_h2, grad_h / shrink * (1 + SLACK) + floor, where)]

    check_pairs("7 convergence order", case, compare,
                pairs=[(m, g) for m, g in current_pairs() if not get_solver(m).error_estimate])
