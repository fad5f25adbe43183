"""The correctness suite catches wrong gradients (issue 28): mutant backends registered through the
public ``register_backend`` are failed by ``check_gradients`` and by the property suite's ci
examples — for every registered method at δ = 1e-2, and at δ = 1e-3 for every method of order
≥ 4 — while the honest backends pass.

The mutants are direct backpropagation made wrong in one way each:

* ``cotangent``: the cotangent flowing into every evaluation of func scaled by 1 + δ;
* ``group``: the gradient of the first parameter group scaled by 1 + δ;
* ``t``: dL/dt zeroed. Gradients with respect to the output times are added by ``odegrad.api``
  for every backend alike (a backend never sees t with its graph), so this mutant's wrong part
  lives where such a bug would: the api's time-gradient step is skipped for it (monkeypatched).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

import odegrad.api
import odegrad.gradients
from odegrad import register_backend, solver_names
from odegrad.gradients import Direct
from odegrad.solvers import get_solver
from odegrad.testing import RandomMLPField, check_gradients, method_order
from odegrad.testing._runs import EXTERNAL_METHODS
from property_tests import _support
from property_tests import test_prop_reference as reference_property
from property_tests._profiles import CATCH

METHODS = [*solver_names(), *EXTERNAL_METHODS]
ACCURATE = [m for m in METHODS if method_order(get_solver(m)) >= 4]
HONEST = ("direct", "backsolve", "gq", "interp")


class ScaledCotangent(Direct):
    """Direct backpropagation with the cotangent into every evaluation of func scaled by 1 + δ
    (``f + δ·(f − f.detach())``: the same values, works on Taylor jets too)."""

    def __init__(self, delta: float):
        self.delta = delta

    def solve(self, problem):
        func, delta = problem.func, self.delta

        def scaled(t, y):
            f = func(t, y)
            return f + delta * (f - f.detach())

        return super().solve(dataclasses.replace(problem, func=scaled))


class ScaledGroup(Direct):
    """Direct backpropagation with the gradient of ``params[0]`` scaled by 1 + δ."""

    def __init__(self, delta: float):
        self.delta = delta

    def solve(self, problem):
        solution = super().solve(problem)
        solution.ys = _AddToGroup.apply(solution.ys, problem.params[0], self.delta)
        return solution


class _AddToGroup(torch.autograd.Function):
    """Identity on ys whose backward adds δ·(dL/dp through ys) to p's gradient."""

    @staticmethod
    def forward(ctx, ys, p, delta):
        ctx.ys, ctx.p, ctx.delta = ys, p, delta
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad):
        (gp,) = torch.autograd.grad(ctx.ys, ctx.p, grad, retain_graph=True, allow_unused=True)
        return grad, None if gp is None else ctx.delta * gp, None


class ZeroTimeGradient(Direct):
    """Direct backpropagation whose dL/dt is zeroed (see the module docstring)."""

    def __init__(self, delta: float):
        self.delta = delta


MUTANTS = {"cotangent": ScaledCotangent, "group": ScaledGroup, "t": ZeroTimeGradient}
DELTAS = [(1e-2, METHODS), (1e-3, ACCURATE)]
CASES = [(kind, delta, methods) for delta, methods in DELTAS for kind in MUTANTS]


@pytest.fixture
def register(monkeypatch):
    """Registers mutants through the public register_backend for one test (the registry and the
    api are restored after it): ``register(kind, delta)`` returns the mutant's name."""
    monkeypatch.setattr(odegrad.gradients, "_REGISTRY", dict(odegrad.gradients._REGISTRY))
    with_time_gradient = odegrad.api._with_time_gradient

    def time_gradient(backend, problem, t):
        if isinstance(backend, ZeroTimeGradient):
            return backend.solve(problem)
        return with_time_gradient(backend, problem, t)

    monkeypatch.setattr(odegrad.api, "_with_time_gradient", time_gradient)

    def make(kind: str, delta: float) -> str:
        name = f"mutant-{kind}"
        register_backend(name, functools.partial(MUTANTS[kind], delta))
        return name

    return make


def _tanh_mlp():
    field = RandomMLPField(2, 8, 1, "tanh", seed=3)
    y0 = torch.randn(2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return field, y0, torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("delta, methods", DELTAS, ids=[f"{d:g}" for d, _ in DELTAS])
def test_check_gradients_catches_every_mutant(register, delta, methods):
    names = [register(kind, delta) for kind in MUTANTS]
    report = check_gradients(*_tanh_mlp(), methods=methods, gradients=("direct", *names))
    verdicts = {c.first: c.passed for c in report.comparisons}
    assert all(r.status == "ok" for r in report.runs), report.table()
    assert [f"{m}/{n}" for m in methods for n in names if verdicts[f"{m}/{n}"]] == [], report.table()  # all caught
    assert all(verdicts[f"{m}/direct"] for m in methods), report.table()  # no false alarm
    assert verdicts["converged reference"], report.table()


def test_check_gradients_passes_every_honest_pair():
    report = check_gradients(*_tanh_mlp(), methods=METHODS, gradients=HONEST)
    refused = {r.label for r in report.runs if r.status == "n/a"}
    assert refused == {f"taylor/{g}" for g in HONEST[1:]}, report.table()
    assert all(c.passed for c in report.comparisons) and len(report.comparisons) == len(report.runs) - 2, \
        report.table()


def _caught_by_property(name: str, methods: list[str], monkeypatch) -> set[str]:
    """The methods whose pair with backend ``name`` fails property 1 on the ci profile's examples
    (without shrinking). check_pairs runs every selected pair on an example before it fails, but
    hypothesis stops at the first failing example: methods not failed yet are run again alone."""
    monkeypatch.setattr(_support, "SUMMARY", {})
    # The property under the ci profile's settings (no shrinking), restored after the test.
    prop = reference_property.test_gradients_match_a_converged_reference
    monkeypatch.setattr(prop, "_hypothesis_internal_use_settings", CATCH)
    remaining, caught = list(methods), set()
    while remaining:
        monkeypatch.setenv("ODEGRAD_PAIRS", ",".join(f"{m}/{name}" for m in remaining))
        with pytest.raises(AssertionError) as failure:
            prop()
        failed = {label.split("/")[0] for r in _support.SUMMARY.values() for label in r.failed_pairs}
        assert failed & set(remaining), str(failure.value)
        caught |= failed
        remaining = [m for m in remaining if m not in failed]
    return caught


@pytest.mark.parametrize("kind, delta, methods", CASES, ids=[f"{k}-{d:g}" for k, d, _ in CASES])
def test_the_property_ci_profile_catches_the_mutant(register, monkeypatch, kind, delta, methods):
    name = register(kind, delta)
    assert _caught_by_property(name, methods, monkeypatch) == set(methods)
