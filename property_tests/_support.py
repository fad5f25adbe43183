"""Shared machinery of the property tests: the pairs under test, the per-pair loop with
declared-refusal handling and failure messages, and the run summary printed at the end."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import event, note

from odegrad.errors import UnsupportedCombination
from odegrad.gradients import AdjointBackend, Interpolation, get_backend
from odegrad.solvers import ImplicitSolver, Taylor, get_solver
from odegrad.testing import (
    PairRun,
    RandomProjectionLoss,
    Settings,
    accurate_settings,
    expected_error,
    linear_gradients,
    linear_solution,
    reference_error,
    registered_pairs,
)
from odegrad.testing.strategies import ODECase

# Read when each property runs: solvers/backends registered on import of odegrad (and by any
# plugin or test registered before) are all checked without editing the tests.
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


def current_pairs() -> list[tuple[str, str]]:
    """The registered pairs (:func:`odegrad.testing.registered_pairs`) that ``ODEGRAD_PAIRS`` selects.
    Implicit (stiff) methods cost seconds per solve here (Newton iterations, Jacobians, GMRES in
    the backward pass of direct): they are checked only when ``ODEGRAD_PAIRS`` names them, e.g.
    ``ODEGRAD_PAIRS="kvaerno5/*"``; tests/test_stiff.py checks them against exact gradients in CI."""
    spec = os.environ.get("ODEGRAD_PAIRS", "")
    return [(m, g) for m, g in registered_pairs() if _selected(f"{m}/{g}", spec)
            and (_named(f"{m}/{g}", spec) or not isinstance(get_solver(m), ImplicitSolver))]


def refused_by_design(method: str, gradient: str) -> bool:
    """The pairs that must raise UnsupportedCombination: the Taylor integrator with an
    adjoint-type backend left to integrate its adjoint with the Taylor integrator (it cannot
    integrate an adjoint system built with torch.autograd.grad). :func:`check_pairs` then checks
    the configuration the refusal names instead, the backend with ``method="rk4"`` for its
    backward solve. Any other refusal fails the property, and so does one of these pairs
    running: a pair cannot silently turn into "not applicable"."""
    return isinstance(get_solver(method), Taylor) and isinstance(get_backend(gradient), AdjointBackend)


def fits_to_tolerance(gradient: str) -> bool:
    """The backend approximates to rtol/atol even with a fixed-step method: ``interp`` fits its
    Chebyshev pieces until a held-out check passes at the tolerances, over the whole batch. Its
    gradients then carry an error ~rtol that neither halving h nor the batch's round-off sets."""
    return isinstance(get_backend(gradient), Interpolation)


def tolerance_of(method: str, settings: Settings, case: ODECase, run: PairRun) -> float:
    """The error-model bound of ``run`` (a gradient: forward plus backward steps), at order p + 1
    for a fixed-step Richardson value (:func:`odegrad.testing.run_converging`)."""
    return expected_error(method, run.extrapolated or settings, case.span, case.scale, steps=2 * run.steps,
                          extrapolated=run.extrapolated is not None)


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
    """What one property measured over a run: counts, refusals, failures per pair and the
    largest fraction of its tolerance any check used, overall and per method."""

    examples: int = 0
    checks: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    pairs: set[str] = field(default_factory=set)
    worst: float = 0.0
    worst_ratio: float = 0.0
    worst_detail: str = ""
    failed_examples: int = 0
    failed_pairs: dict[str, int] = field(default_factory=dict)
    worst_ratio_by_method: dict[str, float] = field(default_factory=dict)


SUMMARY: dict[str, PropertyRecord] = {}


def check_pairs(name: str, case: ODECase, compute: Callable[[str, Any, Settings], list[Check]],
                pairs: list[tuple[str, str]] | None = None) -> None:
    """Run ``compute(method, gradient, settings)`` for every pair and assert all checks pass.

    A pair :func:`refused_by_design` must raise :class:`UnsupportedCombination` (recorded as
    refused, and its backend with an RK4 backward solve is checked instead); any other
    exception, a refusal of another pair, or such a pair running is a failure of that pair. The
    other pairs still run, so one failing example lists every pair that fails on it, with the
    case (field, seeds, y0 shape, t).
    """
    record = SUMMARY.setdefault(name, PropertyRecord())
    record.examples += 1
    description = case.describe()
    note(f"case: {description}")
    failures: dict[str, list[str]] = {}
    for method, gradient in pairs if pairs is not None else current_pairs():
        label = f"{method}/{gradient}"
        settings = accurate_settings(method, case.span, case.scale)
        refused = refused_by_design(method, gradient)
        try:
            checks = compute(method, gradient, settings)
        except UnsupportedCombination as error:
            if refused:
                event(f"refused by design: {label}")
                record.refused.setdefault(label, str(error)[:160])
                label, gradient = f"{label}(method=rk4)", type(get_backend(gradient))(method="rk4")
                try:  # the working configuration the refusal names is checked instead
                    checks = compute(method, gradient, settings)
                except Exception as error:  # noqa: BLE001 - reported as a failure of this pair below
                    failures.setdefault(label, []).append(
                        f"  pair {label} raised {type(error).__name__}: {error}\n"
                        + textwrap.indent(traceback.format_exc(limit=-4), "      "))
                    continue
                _record_checks(record, method, label, settings, checks, failures)
            else:
                failures.setdefault(label, []).append(
                    f"  pair {label} refused (UnsupportedCombination), but no refusal is declared for it "
                    f"(property_tests/_support.py: refused_by_design): {error}")
            continue
        except Exception as error:  # noqa: BLE001 - reported as a failure of this pair below
            failures.setdefault(label, []).append(
                f"  pair {label} ({settings.describe()}) raised {type(error).__name__}: "
                f"{error}\n" + textwrap.indent(traceback.format_exc(limit=-4), "      "))
            continue
        if refused:
            failures.setdefault(label, []).append(
                f"  pair {label} ran, but it is declared refused by design (property_tests/_support.py: "
                f"refused_by_design): check it, and update the declaration")
            continue
        _record_checks(record, method, label, settings, checks, failures)
    if failures:
        record.failed_examples += 1
        for label in failures:
            record.failed_pairs[label] = record.failed_pairs.get(label, 0) + 1
    write_summary()
    lines = [line for messages in failures.values() for line in messages]
    assert not failures, f"[{name}] {len(lines)} check(s) failed\n{description}\n" + "\n".join(lines)


def _record_checks(record: PropertyRecord, method: str, label: str, settings: Settings, checks: list[Check],
                   failures: dict[str, list[str]]) -> None:
    """Count the checks of one pair in ``record`` and add its failed ones to ``failures``."""
    record.pairs.add(label)
    for check in checks:
        record.checks += 1
        ratio = check.disagreement / check.tolerance if math.isfinite(check.disagreement) else math.inf
        record.worst_ratio_by_method[method] = max(record.worst_ratio_by_method.get(method, 0.0), ratio)
        if ratio > record.worst_ratio:
            record.worst_ratio = ratio
            record.worst = check.disagreement
            record.worst_detail = f"{label} {check.what} ({check.where})"
        if not check.passed:
            failures.setdefault(label, []).append(
                f"  pair {label} ({settings.describe()}): {check.what}: relative "
                f"disagreement {check.disagreement:.3e} > tolerance {check.tolerance:.3e} in {check.where or '-'}")


def summary_records() -> dict[str, dict[str, Any]]:
    """:data:`SUMMARY` as plain data: what a pytest-xdist worker hands to the controller."""
    return {name: {**asdict(r), "pairs": sorted(r.pairs)} for name, r in SUMMARY.items()}


def merge_records(records: dict[str, dict[str, Any]]) -> None:
    """Add a worker's :func:`summary_records` to :data:`SUMMARY`: counts add up, refusals and
    pairs are joined, the worst disagreement (overall and per method) is kept."""
    for name, data in records.items():
        mine = SUMMARY.setdefault(name, PropertyRecord())
        mine.examples += data["examples"]
        mine.checks += data["checks"]
        mine.failed_examples += data["failed_examples"]
        mine.refused.update(data["refused"])
        mine.pairs.update(data["pairs"])
        for label, count in data["failed_pairs"].items():
            mine.failed_pairs[label] = mine.failed_pairs.get(label, 0) + count
        for method, ratio in data["worst_ratio_by_method"].items():
            mine.worst_ratio_by_method[method] = max(mine.worst_ratio_by_method.get(method, 0.0), ratio)
        if data["worst_ratio"] > mine.worst_ratio:
            mine.worst_ratio, mine.worst, mine.worst_detail = data["worst_ratio"], data["worst"], data["worst_detail"]


def write_summary() -> None:
    """Write the numbers to ``$ODEGRAD_PROPERTY_SUMMARY`` (JSON) when set; rewritten after every
    example, so a time-boxed run still leaves its counts behind (with pytest-xdist, the
    controller writes the merged summary once at the end: workers would overwrite each other)."""
    path = os.environ.get("ODEGRAD_PROPERTY_SUMMARY")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    data = {name: {"examples": r.examples, "failed_examples": r.failed_examples, "failed_pairs": r.failed_pairs,
                   "pairs": sorted(r.pairs), "checks": r.checks, "refused_by_design": r.refused,
                   "worst_disagreement": r.worst, "worst_ratio_to_tolerance": r.worst_ratio,
                   "worst_where": r.worst_detail, "worst_ratio_by_method": r.worst_ratio_by_method}
            for name, r in SUMMARY.items()}
    Path(path).write_text(json.dumps(data, indent=2))


def format_summary() -> list[str]:
    lines = [f"{'property':<34} {'examples':>8} {'failed':>6} {'pairs':>5} {'refused':>7} {'checks':>7} "
             f"{'worst rel. diff':>15} {'/ tolerance':>11}  where"]
    for name in sorted(SUMMARY):
        r = SUMMARY[name]
        lines.append(f"{name:<34} {r.examples:>8} {r.failed_examples:>6} {len(r.pairs):>5} "
                     f"{len(r.refused):>7} {r.checks:>7} {r.worst:>15.3e} {r.worst_ratio:>11.3f}  "
                     f"{r.worst_detail}")
    methods = sorted({m for r in SUMMARY.values() for m in r.worst_ratio_by_method})
    if methods:
        lines.append("worst fraction of tolerance used, per method: " + ", ".join(
            f"{m} {max(r.worst_ratio_by_method.get(m, 0.0) for r in SUMMARY.values()):.3f}" for m in methods))
    refused = sorted({f"{label}: {why}" for r in SUMMARY.values() for label, why in r.refused.items()})
    if refused:
        lines.append("refused by design (raised UnsupportedCombination, as declared):")
        lines.extend(f"  {item}" for item in refused)
    return lines


def exact_errors(case: ODECase, run: PairRun) -> tuple[float, float, str]:
    """(value error, gradient error, worst gradient group) of a run against the exact solution,
    each relative to the exact result's size (:func:`odegrad.testing.reference_error`)."""
    field = case.func
    loss = RandomProjectionLoss(case.seed)
    exact = linear_gradients(field.A, case.y0, case.t, loss, field.b)
    exact_ys = linear_solution(field.A, case.y0, case.t, field.b).detach()
    value_error = float((run.ys - exact_ys).abs().max() / exact_ys.abs().max().clamp_min(1e-300))
    gradient_error, where = reference_error(run.grads, exact)
    return value_error, gradient_error, where
