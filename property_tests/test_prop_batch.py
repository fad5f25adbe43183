"""(5) Batch independence: solving a batch gives each sample's own gradient with respect to its
y0, and the sum of the per-sample gradients with respect to parameters and t. Fixed-step methods
take the same steps for a batch as for each sample, so they agree to round-off — except with
``interp``, which fits its Chebyshev pieces to a tolerance over the whole batch (measured: 1.8e-7
on rk4); adaptive methods share one step size across the batch. Those agree within their error
bounds."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given
from hypothesis import strategies as st

from odegrad.solvers import get_solver
from odegrad.testing import RandomProjectionLoss, expected_error, relative_disagreement, run_pair
from odegrad.testing.strategies import ODECase, ode_cases

from ._support import Check, check_pairs, fits_to_tolerance

BATCHES = st.one_of(st.tuples(st.integers(2, 3)), st.just((2, 2)))
ROUNDOFF = 1e-11
"""Relative float64 round-off of ≤ 10⁴ operations whose summation order differs between a batched
and an unbatched solve."""


def _sample(x, index, lead: int):
    """Batch entry ``index`` of a state (lead=0) or trajectory (lead=1), tensor or tuple."""
    key = (slice(None),) * lead + index
    return x[key] if isinstance(x, torch.Tensor) else tuple(v[key] for v in x)


class PerSampleLoss:
    """Σ_b ℓ_b(ys[:, b]) with a different random projection ℓ_b per batch entry."""

    def __init__(self, seed: int, batch_shape: tuple[int, ...]):
        self.indices = list(itertools.product(*(range(n) for n in batch_shape)))
        self.losses = {index: RandomProjectionLoss(seed + k) for k, index in enumerate(self.indices)}

    def __call__(self, ys):
        return sum(self.losses[index](_sample(ys, index, lead=1)) for index in self.indices)


@given(case=ode_cases(batches=BATCHES))
def test_batch_independence(case: ODECase):
    batch_loss = PerSampleLoss(case.seed, case.batch_shape)

    def compare(method, gradient, settings):
        whole = run_pair(case.func, case.y0, case.t, method, gradient, settings=settings, loss=batch_loss)
        assembled = {name: torch.zeros_like(g) for name, g in whole.grads.items()}
        worst_single = 0.0
        for index in batch_loss.indices:
            one = run_pair(case.func, _sample(case.y0, index, lead=0), case.t, method, gradient,
                           settings=settings, loss=batch_loss.losses[index])
            for name, g in one.grads.items():
                if name.startswith("y0"):
                    assembled[name][index] = g
                else:
                    assembled[name] += g
            worst_single = max(worst_single, expected_error(method, settings, case.span, case.scale,
                                                            steps=2 * one.steps))
        disagreement, where = relative_disagreement(whole.grads, assembled)
        if not (get_solver(method).error_estimate or fits_to_tolerance(gradient)):
            return [Check("batch gradient vs per-sample gradients (same steps)", disagreement, ROUNDOFF, where)]
        tolerance = worst_single + expected_error(method, settings, case.span, case.scale, steps=2 * whole.steps)
        return [Check("batch gradient vs per-sample gradients", disagreement, tolerance, where)]

    check_pairs("5 batch independence", case, compare)
