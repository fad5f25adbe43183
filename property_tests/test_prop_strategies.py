"""The strategies themselves draw what they promise (cheap: no solves)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from odegrad.testing.strategies import (
    SPECTRA,
    batch_shapes,
    linear_fields,
    mlp_fields,
    ode_cases,
    time_grids,
    tolerances,
)


@given(t=time_grids())
def test_time_grids_are_strictly_monotone(t):
    assert t.dtype == torch.float64 and 2 <= t.numel() <= 10
    gaps = t[1:] - t[:-1]
    assert bool((gaps > 0).all()) or bool((gaps < 0).all())
    assert 0.1 - 1e-12 <= abs(float(t[-1] - t[0])) <= 1.2 + 1e-12


@given(kind=st.sampled_from(SPECTRA), data=st.data())
def test_linear_fields_have_the_chosen_spectrum(kind, data):
    field = data.draw(linear_fields(kinds=st.just(kind)))
    real = torch.linalg.eigvals(field.A.detach()).real
    bounds = {"stable": (-1.5, -0.1), "oscillatory": (-0.1, 0.05), "unstable": (0.05, 0.5)}[kind]
    assert bool((real >= bounds[0] - 1e-9).all()) and bool((real <= bounds[1] + 1e-9).all())


@given(field=mlp_fields())
def test_mlp_fields_have_their_drawn_rate_scale(field):
    assert 0.2 - 1e-9 <= field.rate_scale <= 1.5 + 1e-9
    y = torch.zeros(3, field.dim, dtype=torch.float64)
    assert field(torch.tensor(0.3, dtype=torch.float64), y).shape == y.shape


@given(rtol_atol=tolerances(), shape=batch_shapes())
def test_tolerances_and_batch_shapes(rtol_atol, shape):
    rtol, atol = rtol_atol
    assert 1e-9 * (1 - 1e-9) <= rtol <= 1e-3 * (1 + 1e-9) and rtol * 1e-3 * (1 - 1e-9) <= atol <= rtol * (1 + 1e-9)
    assert len(shape) <= 2 and all(n >= 1 for n in shape)


@given(case=ode_cases())
def test_cases_have_consistent_states(case):
    states = case.y0 if isinstance(case.y0, tuple) else (case.y0,)
    out = case.func(case.t[0], case.y0)
    outs = out if isinstance(out, tuple) else (out,)
    assert [o.shape for o in outs] == [s.shape for s in states]
    assert str(case.seed) in case.describe()
