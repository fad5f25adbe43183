"""Shared machinery of the property tests: the pairs under test, the per-pair loop with
not-applicable handling and failure messages, and the run summary printed at the end."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import event, note

from odegrad.errors import UnsupportedCombination
from odegrad.solvers import ImplicitSolver, get_solver
from odegrad.testing import (
    RandomProjectionLoss,
    Settings,
    accurate_settings,
    linear_gradients,
    linear_solution,
    registered_pairs,
    relative_disagreement,
)
from odegrad.testing.strategies import ODECase

# Read when the test modules are collected: solvers/backends registered on import of odegrad
# (and by any plugin imported before collection) are all checked without editing the tests.
# ODEGRAD_PAIRS="rk4/*,*/interp" narrows a run to matching "method/gradient" labels and
# "!taylor/*" leaves matching ones out (debugging one new solver or backend); unset, every pair
# is checked.


def _patterns(spec: str) -> tuple[list[str], list[str]]:
    """The include and the exclude (``!``) patterns of an ODEGRAD_PAIRS value."""
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    return [p for p in patterns if not p.startswith("!")], [p[1:] for p in patterns if p.startswith("!")]


def _selected(label: str, spec: str) -> bool:
    include, exclude = _patterns(spec)
    return ((not include or any(fnmatch.fnmatch(label, p) for p in include))
            and not any(fnmatch.fnmatch(label, p) for p in exclude))


def _named(label: str, spec: str) -> bool:
    """Whether an include pattern of ``spec`` matches ``label``."""
    return any(fnmatch.fnmatch(label, p) for p in _patterns(spec)[0])


def _implicit(method: str) -> bool:
    return isinstance(get_solver(method), ImplicitSolver)


# Implicit (stiff) methods cost seconds per solve here (Newton iterations, Jacobians, GMRES in the
# backward pass of direct): the suite checks them only when ODEGRAD_PAIRS names them, e.g.
# ODEGRAD_PAIRS="kvaerno5/*"; tests/test_stiff.py checks them against exact gradients in CI.
_SPEC = os.environ.get("ODEGRAD_PAIRS", "")
PAIRS = [(m, g) for m, g in registered_pairs() if _selected(f"{m}/{g}", _SPEC)
         and (_named(f"{m}/{g}", _SPEC) or not _implicit(m))]


@dataclass
class Check:
    """One measured quantity of one pair: ``disagreement`` must not exceed ``tolerance``."""

    what: str
    disagreement: float
    tolerance: float
    where: str = ""

    @property
    def passed(self) -> bool:
        return self.disagreement <= self.tolerance  # False for NaN


@dataclass
class PropertyRecord:
    examples: int = 0
    checks: int = 0
    not_applicable: dict[str, str] = field(default_factory=dict)
    pairs: set[str] = field(default_factory=set)
    worst: float = 0.0
    worst_ratio: float = 0.0
    worst_detail: str = ""
    failed_examples: int = 0


SUMMARY: dict[str, PropertyRecord] = {}


def check_pairs(name: str, case: ODECase, compute: Callable[[str, str, Settings], list[Check]],
                pairs: list[tuple[str, str]] | None = None) -> None:
    """Run ``compute(method, gradient, settings)`` for every pair and assert all checks pass.

    A pair raising :class:`UnsupportedCombination` is not applicable (recorded, not failed); any
    other exception is a failure of that pair. The other pairs still run, so one failing example
    lists every pair that fails on it, with the case (field, seeds, y0 shape, t).
    """
    record = SUMMARY.setdefault(name, PropertyRecord())
    record.examples += 1
    description = case.describe()
    note(f"case: {description}")
    failures = []
    for method, gradient in pairs if pairs is not None else PAIRS:
        label = f"{method}/{gradient}"
        settings = accurate_settings(method, case.span, case.scale)
        try:
            checks = compute(method, gradient, settings)
        except UnsupportedCombination as error:
            event(f"not applicable: {label}")
            record.not_applicable.setdefault(label, str(error)[:160])
            continue
        except Exception as error:  # noqa: BLE001 - reported as a failure of this pair below
            failures.append(f"  pair {label} ({settings.describe()}) raised {type(error).__name__}: "
                            f"{error}\n" + textwrap.indent(traceback.format_exc(limit=-4), "      "))
            continue
        record.pairs.add(label)
        for check in checks:
            record.checks += 1
            ratio = check.disagreement / check.tolerance if math.isfinite(check.disagreement) else math.inf
            if ratio > record.worst_ratio:
                record.worst_ratio = ratio
                record.worst = check.disagreement
                record.worst_detail = f"{label} {check.what} ({check.where})"
            if not check.passed:
                failures.append(f"  pair {label} ({settings.describe()}): {check.what}: relative "
                                f"disagreement {check.disagreement:.3e} > tolerance {check.tolerance:.3e}"
                                f" in {check.where or '-'}")
    if failures:
        record.failed_examples += 1
    write_summary()
    assert not failures, f"[{name}] {len(failures)} check(s) failed\n{description}\n" + "\n".join(failures)


def write_summary() -> None:
    """Write the numbers to ``$ODEGRAD_PROPERTY_SUMMARY`` (JSON) when set; rewritten after every
    example, so a time-boxed run still leaves its counts behind."""
    path = os.environ.get("ODEGRAD_PROPERTY_SUMMARY")
    if not path:
        return
    data = {name: {"examples": r.examples, "failed_examples": r.failed_examples, "pairs": sorted(r.pairs),
                   "checks": r.checks, "not_applicable": r.not_applicable, "worst_disagreement": r.worst,
                   "worst_ratio_to_tolerance": r.worst_ratio, "worst_where": r.worst_detail}
            for name, r in SUMMARY.items()}
    Path(path).write_text(json.dumps(data, indent=2))


def format_summary() -> list[str]:
    lines = [f"{'property':<34} {'examples':>8} {'failed':>6} {'pairs':>5} {'n/a':>4} {'checks':>7} "
             f"{'worst rel. diff':>15} {'/ tolerance':>11}  where"]
    for name in sorted(SUMMARY):
        r = SUMMARY[name]
        lines.append(f"{name:<34} {r.examples:>8} {r.failed_examples:>6} {len(r.pairs):>5} "
                     f"{len(r.not_applicable):>4} {r.checks:>7} {r.worst:>15.3e} {r.worst_ratio:>11.3f}  "
                     f"{r.worst_detail}")
    na = sorted({f"{label}: {why}" for r in SUMMARY.values() for label, why in r.not_applicable.items()})
    if na:
        lines.append("not applicable (raised UnsupportedCombination):")
        lines.extend(f"  {item}" for item in na)
    return lines


def exact_errors(case: ODECase, run) -> tuple[float, float, str]:
    """(value error, gradient error, worst gradient group) of a run against the exact solution."""
    field = case.func
    loss = RandomProjectionLoss(case.seed)
    exact = linear_gradients(field.A, case.y0, case.t, loss, field.b)
    exact_ys = linear_solution(field.A, case.y0, case.t, field.b).detach()
    value_error = float((run.ys - exact_ys).abs().max() / exact_ys.abs().max().clamp_min(1e-300))
    gradient_error, where = relative_disagreement(run.grads, exact)
    return value_error, gradient_error, where
