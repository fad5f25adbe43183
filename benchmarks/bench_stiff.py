"""Stiff problems side by side: odegrad's implicit methods vs scipy's Radau and BDF and odegrad's
dopri5, in one run (issue 25).

* Robertson's kinetics (k₁ = 0.04, k₂ = 3·10⁷, k₃ = 10⁴) on [0, 10⁵], 40 log-spaced outputs,
  rtol 1e-6 / atol 1e-10;
* Van der Pol, μ = 1000, y0 = (2, 0), over two periods ([0, 3000]), 30 outputs, same tolerances.

Columns: accepted steps, rejected steps, NFE (scipy: ``nfev``, which excludes its Jacobian's
finite differences, reported as ``njev``), Jacobians, LU factorizations, the largest error at the
outputs against a tight Radau solution (rtol 1e-12) in tolerance units, ``max |Δ| / (atol +
rtol·|y_ref|)``, and the wall time of one solve (float64, CPU; the machine's other load shows in
it). dopri5 runs
with ``max_steps`` capped: where it stops, its NFE per unit time is extrapolated to the span.

Then the training run of examples/stiff_robertson.py: Robertson's three rates learnt from noisy
observations (10x off to start) with ``interp`` + kvaerno5, beside kvaerno5 + direct and
dopri5 + interp.

    python benchmarks/bench_stiff.py                  # ~30 minutes on 2 shared cores
    python benchmarks/bench_stiff.py --quick          # smoke run (short spans, numbers meaningless)
    python benchmarks/bench_stiff.py --only training  # one part (solvers | training)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odegrad

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from stiff_robertson import fit, observations  # noqa: E402

D = torch.float64
RTOL, ATOL = 1e-6, 1e-10
ODEGRAD_METHODS = ("kvaerno5", "kvaerno4", "kvaerno3", "rodas4", "dopri5")


@dataclass
class Problem:
    """A stiff test problem: torch and numpy right-hand sides, y0, output times."""

    name: str
    torch_f: Callable
    numpy_f: Callable
    y0: list[float]
    t: np.ndarray


def robertson(end: float) -> Problem:
    def torch_f(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2,
                            3e7 * y2 ** 2], -1)

    def numpy_f(t, y):
        return [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2]

    t = np.concatenate([[0.0], np.logspace(-5, math.log10(end), 40)])
    return Problem(f"Robertson [0, {end:g}]", torch_f, numpy_f, [1.0, 0.0, 0.0], t)


def van_der_pol(end: float, mu: float = 1000.0) -> Problem:
    def torch_f(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def numpy_f(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    return Problem(f"Van der Pol mu={mu:g} [0, {end:g}]", torch_f, numpy_f, [2.0, 0.0], np.linspace(0, end, 30))


@dataclass
class Row:
    method: str
    steps: int | str
    rejected: int | str
    nfe: int | str
    jacobians: int | str
    lu: int | str
    error: float
    seconds: float
    note: str = ""


def relative_error(ys: np.ndarray, reference: np.ndarray) -> float:
    """Largest error in tolerance units, |Δ| / (atol + rtol·|y_ref|), over outputs and components."""
    return float(np.max(np.abs(ys - reference) / (ATOL + RTOL * np.abs(reference))))


def scipy_row(problem: Problem, method: str, reference: np.ndarray) -> Row:
    start = time.perf_counter()
    sol = solve_ivp(problem.numpy_f, (problem.t[0], problem.t[-1]), problem.y0, method=method,
                    t_eval=problem.t, rtol=RTOL, atol=ATOL, dense_output=True)
    seconds = time.perf_counter() - start
    steps = len(sol.sol.ts) - 1  # accepted steps: the pieces of the dense output
    return Row(f"scipy {method}", steps, "-", sol.nfev, sol.njev, sol.nlu,
               relative_error(sol.y.T, reference), seconds, note="nfev excludes its finite-difference Jacobians")


def odegrad_row(problem: Problem, method: str, reference: np.ndarray, max_steps: int, tighter: float = 1.0) -> Row:
    """One solve with ``method`` at the benchmark's tolerances divided by ``tighter``."""
    y0, t = torch.tensor(problem.y0, dtype=D), torch.tensor(problem.t, dtype=D)
    label = method if tighter == 1.0 else f"{method} (rtol {RTOL / tighter:g}, atol {ATOL / tighter:g})"
    start = time.perf_counter()
    try:
        with torch.no_grad():
            sol = odegrad.solve(problem.torch_f, y0, t, method=method, rtol=RTOL / tighter, atol=ATOL / tighter,
                                options={"max_steps": max_steps})
    except odegrad.errors.IntegrationFailure as error:
        seconds = time.perf_counter() - start
        estimate = error.nfe * (problem.t[-1] - problem.t[0]) / max(error.t - problem.t[0], 1e-300)
        return Row(label, f">{max_steps}", "-", f"{error.nfe} (to t={error.t:.3g}; ~{estimate:.2g} for the span)",
                   0, 0, math.nan, seconds, note=type(error).__name__)
    seconds = time.perf_counter() - start
    s = sol.stats
    return Row(label, s.steps_accepted, s.steps_rejected, s.nfe_forward, s.jacobian_evals, s.lu_factorizations,
               relative_error(sol.ys.numpy(), reference), seconds)


def table(problem: Problem, rows: list[Row]) -> str:
    lines = [f"### {problem.name}, rtol {RTOL:g} / atol {ATOL:g}", "",
             "| method | steps | rejected | NFE | Jacobians | LU | error vs Radau 1e-12 [tol units] | time [s] "
             "| note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.steps} | {r.rejected} | {r.nfe} | {r.jacobians} | {r.lu} | "
                     f"{r.error:.2e} | {r.seconds:.2f} | {r.note} |")
    return "\n".join(lines)


def solver_comparison(problem: Problem, max_steps: int) -> str:
    reference = solve_ivp(problem.numpy_f, (problem.t[0], problem.t[-1]), problem.y0, method="Radau",
                          t_eval=problem.t, rtol=1e-12, atol=1e-14).y.T
    rows = [scipy_row(problem, "Radau", reference), scipy_row(problem, "BDF", reference)]
    rows += [odegrad_row(problem, m, reference, max_steps) for m in ODEGRAD_METHODS]
    # the implicit methods' error per tolerance is larger than Radau's: at 100x tighter tolerances
    # they reach Radau's accuracy (compare steps there)
    rows += [odegrad_row(problem, m, reference, max_steps, tighter=100.0) for m in ("kvaerno5", "rodas4")]
    return table(problem, rows)


def training(quick: bool, iterations: int, dopri5_max_steps: int) -> None:
    end, outputs = (1.0, 4) if quick else (1e5, 16)
    t = torch.cat([torch.zeros(1, dtype=D), torch.logspace(-4, math.log10(end), outputs, dtype=D)])
    data = observations(t)
    print(f"### Training: Robertson rates from 1% noisy data at {outputs} log-spaced times in [1e-4, {end:g}] "
          "(Adam lr 0.2, log rates, start 10x off)\n\n"
          "| method | iterations | seconds | final rate error | 1% reached (iterations, s) | NFE fwd/bwd (last) | "
          "stopped by |\n|---|---|---|---|---|---|---|", flush=True)
    for method, gradient, cap in (("kvaerno5", "interp", 20_000), ("kvaerno5", "direct", 20_000),
                                  ("dopri5", "interp", dopri5_max_steps)):
        model, run = fit(method, t, data, iterations=iterations, gradient=gradient, max_steps=cap)
        reached = run.to_target()
        seconds = run.history[-1][0] if run.history else 0.0
        print(f"| {method} + {gradient} | {len(run.history)} | {seconds:.1f} | {model.rate_error():.3g} | "
              f"{f'{reached[0]}, {reached[1]:.1f}' if reached else 'no'} | "
              f"{run.nfe_forward}/{run.nfe_backward} | {run.failure or '-'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--only", choices=("solvers", "training"), help="run one part only")
    args = parser.parse_args()
    max_steps = 2_000 if args.quick else 20_000
    if args.only != "training":
        for problem in (robertson(1.0 if args.quick else 1e5), van_der_pol(10.0 if args.quick else 3000.0)):
            print(solver_comparison(problem, max_steps), "\n", flush=True)
    if args.only != "solvers":
        training(args.quick, 2 if args.quick else args.iterations, max_steps)


if __name__ == "__main__":
    main()
