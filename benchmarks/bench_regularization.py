"""Local regularization (Pal, Edelman & Rackauckas, ICML 2023) vs global regularizers, in one run.

For each task of examples/regularization.py (digits classification with an ODE block,
Lotka–Volterra system identification) the same model is trained unregularized, with local
regularization (unbiased and biased sampling), RNODE (``Kinetic``) and ``TaylorOrder``, from
several seeds (same initialisation and batches per seed across regularizers). Reported: training
time, NFE of one prediction on the test set (dopri5 at the training tolerances, without the
term), its median time, test loss and accuracy — mean ± standard deviation over the seeds, and
the ratios of the means to the unregularized run. The goal (issue 12): NFE ≤ 0.6x at ≤ 5%
relative change of test loss / accuracy, local training time ≤ 1.2x.

The regularization weights are the tasks' defaults in examples/regularization.py, picked by a
short sweep on seed 0 (``--sweep`` reruns one around them: each default x0.1, x1, x10): for each
regularizer, a weight with the fewest NFE among those that kept the test loss and accuracy within
5% of the unregularized run (on Lotka–Volterra no such weight cut NFE: there, the largest power of
ten that kept them within 5%).

    python benchmarks/bench_regularization.py            # ~12 minutes on 2 shared cores
    python benchmarks/bench_regularization.py --quick    # smoke run (numbers meaningless)
    python benchmarks/bench_regularization.py --sweep    # the weight sweep, seed 0
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from regularization import NAMES, REFERENCE, REGULARIZERS, TASKS, Result, Task, train  # noqa: E402

SWEEP_FACTORS = (0.1, 1.0, 10.0)
NFE_GOAL, CHANGE_GOAL, TRAIN_GOAL = 0.6, 0.05, 1.2


def _stat(values: list[float], digits: str) -> str:
    """``mean ± std`` of ``values`` (just the mean for one value, "–" for NaN)."""
    mean = statistics.fmean(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:{digits}}" + (f" ± {statistics.stdev(values):{digits}}" if len(values) > 1 else "")


def _mean(results: list[Result], key: str) -> float:
    """Mean of attribute ``key`` over ``results``."""
    return statistics.fmean(getattr(r, key) for r in results)


def _change(value: float, reference: float) -> str:
    """Relative change of ``value`` against ``reference`` as a signed percentage ("–" for NaN)."""
    return "–" if math.isnan(value) else f"{value / reference - 1:+.1%}"


def table(task: Task, results: dict[str, list[Result]]) -> list[str]:
    """Markdown rows (header first) of one task: mean ± std over the seeds and ratios of the
    means to the unregularized run."""
    ref = results[REFERENCE]
    head = ["task", "regularizer", "weight", "train time [s]", "train x", "NFE/prediction", "NFE x",
            "prediction [ms]", "prediction x", "test loss", "loss change", "accuracy", "accuracy change"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in results.items():
        cells = [task.name, name, f"{task.weights.get(name, 0):g}",
                 _stat([r.train_seconds for r in runs], ".2f"),
                 f"{_mean(runs, 'train_seconds') / _mean(ref, 'train_seconds'):.2f}x",
                 _stat([r.nfe for r in runs], ".1f"), f"{_mean(runs, 'nfe') / _mean(ref, 'nfe'):.2f}x",
                 _stat([1e3 * r.predict_seconds for r in runs], ".1f"),
                 f"{_mean(runs, 'predict_seconds') / _mean(ref, 'predict_seconds'):.2f}x",
                 _stat([r.test_loss for r in runs], ".4g"), _change(_mean(runs, "test_loss"), _mean(ref, "test_loss")),
                 _stat([r.accuracy for r in runs], ".4f"), _change(_mean(runs, "accuracy"), _mean(ref, "accuracy"))]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def verdict(task: Task, results: dict[str, list[Result]]) -> list[str]:
    """One sentence per local variant: does it meet the goal, and by how much."""
    ref = results[REFERENCE]
    lines = []
    for name in (n for n in results if n.startswith("local")):
        nfe = _mean(results[name], "nfe") / _mean(ref, "nfe")
        train_ratio = _mean(results[name], "train_seconds") / _mean(ref, "train_seconds")
        loss = _mean(results[name], "test_loss") / _mean(ref, "test_loss") - 1
        accuracy = _mean(results[name], "accuracy") / _mean(ref, "accuracy") - 1
        worse = max(loss, -accuracy) if not math.isnan(accuracy) else loss
        met = [nfe <= NFE_GOAL, worse <= CHANGE_GOAL, train_ratio <= TRAIN_GOAL]
        lines.append(f"{task.name} {name}: NFE {nfe:.2f}x (goal ≤ {NFE_GOAL}x), worst relative degradation of "
                     f"test loss/accuracy {worse:+.1%} (goal ≤ {CHANGE_GOAL:.0%}), training time {train_ratio:.2f}x "
                     f"(goal ≤ {TRAIN_GOAL}x): {'goal met' if all(met) else 'goal not met'}.")
    return lines


def sweep(task: Task, iterations: int | None, progress: bool) -> list[str]:
    """Each regularizer's default weight x ``SWEEP_FACTORS`` on seed 0: NFE and test loss."""
    rows = ["| task | regularizer | weight | NFE/prediction | test loss | accuracy |", "|---|---|---|---|---|---|"]
    reference = train(task, REFERENCE, 0, iterations=iterations, progress=progress)
    runs = [(0.0, reference)] + [(task.weights[name] * factor, train(
        task, name, 0, weight=task.weights[name] * factor, iterations=iterations, progress=progress))
        for name in REGULARIZERS for factor in SWEEP_FACTORS]
    for weight, r in runs:
        rows.append(f"| {task.name} | {r.name} | {weight:g} | {r.nfe} | {r.test_loss:.4g} | {r.accuracy:.4f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per regularizer (default 3)")
    parser.add_argument("--sweep", action="store_true", help="sweep the weights on seed 0 instead")
    parser.add_argument("--quick", action="store_true", help="a few iterations, one seed (smoke run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    iterations, seeds, repeats = (5, 1, 3) if args.quick else (None, args.seeds, 20)
    progress = not args.no_progress
    tasks = [TASKS[name] for name in args.tasks.split(",")]
    for task in tasks:
        print(f"{task.name}: {iterations or task.iterations} iterations (Adam, lr {task.lr:g}), dopri5 "
              f"rtol={task.rtol:g} atol={task.atol:g}, direct backprop, 1 thread; {seeds} seed(s); "
              f"test loss: {task.loss_name}")
    if args.sweep:
        for task in tasks:
            print("\n".join(sweep(task, iterations, progress)))
        return
    rows: list[str] = []
    verdicts: list[str] = []
    for task in tasks:
        results: dict[str, list[Result]] = {name: [] for name in NAMES}
        for seed in range(seeds):  # seeds outermost: load drifting over the run affects each regularizer alike
            for name in NAMES:
                results[name].append(train(task, name, seed, iterations=iterations, repeats=repeats,
                                           progress=progress))
        rows += table(task, results)[0 if not rows else 2:]
        verdicts += verdict(task, results)
        if task.true_nfe is not None:
            verdicts.append(f"{task.name}: the true vector field needs {task.true_nfe(task.rtol, task.atol)} NFE for "
                            f"the same prediction, a floor for a model that fits it.")
    print("mean ± std over the seeds; 'x' and 'change': ratio of the means to the unregularized run")
    print("\n".join(rows + verdicts))


if __name__ == "__main__":
    main()
