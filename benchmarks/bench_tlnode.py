"""TL-NODE training speed vs adaptive dopri5 at equal test loss, measured in one run.

For each of the TL-NODE paper's task kinds (examples/: spiral and Lotka–Volterra system
identification, digits classification, 2-D CNF density estimation) the same model is trained three
ways with the same initialisation, data order and optimiser: TL-NODE (fixed-order Taylor steps with
a learned midpoint, odegrad), odegrad dopri5 and torchdiffeq dopri5 (``method="torchdiffeq:dopri5"``,
torchdiffeq's own solver and backprop), all with direct backpropagation. The reported speed-up is
(training seconds until the baseline's test loss first reaches the common target) / (the same for
TL-NODE), where the common target is the worst of the three runs' best test losses (+5%; +0.05
nats for the CNF). The paper claims ≥ 10x; the last column says where that holds. The runs are
sequential, so load from other processes can shift one run more than another: compare ratios
across repeated runs before trusting one.

    python benchmarks/bench_tlnode.py            # ~4-6 minutes on 2 cores
    python benchmarks/bench_tlnode.py --quick    # smoke run (numbers meaningless)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import density_cnf  # noqa: E402
import digits_classification  # noqa: E402
import lotka_volterra  # noqa: E402
from _harness import Run, Target, common_target, comparison_report  # noqa: E402

from odegrad.demo import SpiralField, spiral_data  # noqa: E402

BASELINES = ["dopri5", "torchdiffeq:dopri5"]


def spiral(iterations: int, rtol: float, atol: float, progress: bool) -> tuple[list[Run], Target]:
    """The demo's spiral task, trained by the Lotka–Volterra example's trajectory loop."""
    t, ys = spiral_data()
    task = lotka_volterra.TrajectoryTask(t, ys[:, None], batch_size=16, segment=10)
    runs, _ = lotka_volterra.compare(task, SpiralField, iterations, 1, 1, BASELINES, rtol, atol, progress=progress)
    return runs, common_target(runs)


def lotka(iterations: int, rtol: float, atol: float, progress: bool) -> tuple[list[Run], Target]:
    runs, _ = lotka_volterra.compare(lotka_volterra.lotka_volterra_task(), lotka_volterra.Field, iterations, 1, 1,
                                     BASELINES, rtol, atol, progress=progress)
    return runs, common_target(runs)


def digits(iterations: int, rtol: float, atol: float, progress: bool) -> tuple[list[Run], Target]:
    runs = digits_classification.compare(iterations, 1, 1, BASELINES, rtol, atol, progress)
    return runs, common_target(runs)


def cnf(iterations: int, rtol: float, atol: float, progress: bool) -> tuple[list[Run], Target]:
    runs, _ = density_cnf.compare(iterations, 1, 4, BASELINES, rtol, atol, progress)
    return runs, common_target(runs, relative=0.0, absolute=0.05)


TASKS = {
    # name: (function, iterations, quick iterations, rtol, atol, what the loss is)
    "spiral": (spiral, 300, 30, 1e-7, 1e-9, "test MSE"),
    "lotka-volterra": (lotka, 300, 30, 1e-7, 1e-9, "test MSE"),
    "digits": (digits, 300, 30, 1e-5, 1e-5, "test cross-entropy"),
    "cnf-8gauss": (cnf, 200, 20, 1e-5, 1e-5, "test NLL (dopri5-evaluated)"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    summary = ["| task | loss | target | TL-NODE [s] | odegrad dopri5 [s] | torchdiffeq dopri5 [s] | "
               "speed-up vs odegrad dopri5 | speed-up vs torchdiffeq dopri5 | NFE TL / dopri5 / tdq | "
               "final TL / dopri5 / tdq | >= 10x? (vs odegrad / vs torchdiffeq) |", "|" + "---|" * 11]
    for name in args.tasks:
        fn, iterations, quick, rtol, atol, loss_name = TASKS[name]
        runs, target = fn(quick if args.quick else iterations, rtol, atol, args.progress)
        print(f"\n## {name}: {loss_name}, dopri5 rtol={rtol:g} atol={atol:g}")
        print(comparison_report(runs, target, reference="dopri5"))
        times = [run.seconds_to(target.value) for run in runs]
        ratios = [t / times[0] if times[0] > 0 else math.nan for t in times[1:]]
        finals = [run.metric if run.metric_name else run.final_loss for run in runs]
        holds = " / ".join("yes" if r >= 10 else "no" for r in ratios)
        summary.append(
            f"| {name} | {loss_name} | {target.value:.4g} | {times[0]:.2f} | {times[1]:.2f} | {times[2]:.2f} | "
            f"{ratios[0]:.1f}x | {ratios[1]:.1f}x | "
            f"{' / '.join(f'{r.nfe_per_forward:.1f}' for r in runs)} | "
            f"{' / '.join(f'{f:.4g}' for f in finals)} | {holds} |")
    print("\n## Summary: training time to the common test loss (TL-NODE vs dopri5, same run)")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
