"""Regularizing neural ODEs to be cheap to solve: local (Pal et al. 2023) vs global regularizers.

Two tasks, each trained with dopri5 (direct backprop) and one ``regularization=`` term added to
the loss, then deployed without it:

* ``digits``: scikit-learn's digits with an ODE block (examples/digits_classification.py's
  model, ``NeuralODE(..., regularization=reg)``; the term is ``model.ode.regularization``);
* ``lotka-volterra``: the vector field of examples/lotka_volterra.py fitted to 5-point segments
  (``odegrad.solve(..., regularization=reg)``; the term is ``sol.regularization``).

Regularizers (``REGULARIZERS``): none, local with unbiased or biased sampling (the solver's own
error estimate EEst·|h| of one re-executed step), RNODE (``Kinetic``: ∫‖f‖² + ∫‖∂f/∂y‖²_F) and
Kelly et al.'s ``TaylorOrder`` (∫‖d^K y/dt^K‖²). For each: training time, NFE of one prediction
on the test set (dopri5 at the training tolerances), its time, and the test loss / accuracy.

    python examples/regularization.py                         # digits, one seed, ~1-2 minutes on 2 cores
    python examples/regularization.py --task lotka-volterra
    python examples/regularization.py --quick                 # smoke run

It plots the NFE of a test-set prediction over training, per regularizer, to ``examples_out/regularization.png``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import digits_classification
import lotka_volterra
import torch
from _harness import Run, colour, place_legend, save_figure, timed_iterations
from torch import Tensor, nn

import odegrad
from odegrad.models import NeuralODE
from odegrad.regularization import Kinetic, LocalRegularization, Regularizer, TaylorOrder
from odegrad.solvers import CountedFunc

TAYLOR_ORDER = 3  # K of TaylorOrder: near dopri5's order, affordable in Taylor mode


def _local(sampling: str) -> Callable[[float, torch.Generator], Regularizer]:
    """``(weight, generator) -> LocalRegularization`` with the error weight and ``sampling``."""
    return lambda weight, generator: LocalRegularization(error=weight, sampling=sampling, generator=generator)


REGULARIZERS: dict[str, Callable[[float, torch.Generator], Regularizer]] = {
    "local-unbiased": _local("unbiased"),
    "local-biased": _local("biased"),
    "RNODE": lambda weight, generator: Kinetic(kinetic=weight, jacobian=weight, generator=generator),
    f"Taylor-{TAYLOR_ORDER}": lambda weight, generator: TaylorOrder(order=TAYLOR_ORDER, weight=weight),
}
"""Name -> ``(weight, generator) -> regularizer``; "unregularized" is the reference."""
REFERENCE = "unregularized"
NAMES = (REFERENCE, *REGULARIZERS)


@dataclass
class Setup:
    """One task with a freshly initialised model.

    ``field`` counts the evaluations; ``loss()`` draws the next training batch and returns task
    loss + regularization term; ``predict()`` solves the test set without the term (call it under
    ``torch.no_grad()``); ``score(prediction)`` is (test loss, test accuracy or NaN)."""

    field: CountedFunc
    parameters: list[nn.Parameter]
    loss: Callable[[], Tensor]
    predict: Callable[[], Tensor]
    score: Callable[[Tensor], tuple[float, float]]


@dataclass(frozen=True)
class Task:
    """A benchmark task: tolerances and optimiser of its dopri5 training, the weight of each
    regularizer (picked by a sweep on seed 0, see benchmarks/bench_regularization.py),
    ``setup(regularization, seed, rtol, atol)`` and, where the data come from a known
    vector field, ``true_nfe(rtol, atol)``: the NFE of the same prediction by that field (the
    floor for a model that fits it)."""

    name: str
    loss_name: str
    rtol: float
    atol: float
    iterations: int
    lr: float
    weights: dict[str, float]
    setup: Callable[[Regularizer | None, int, float, float], Setup]
    true_nfe: Callable[[float, float], int] | None = None


def digits_setup(regularization: Regularizer | None, seed: int, rtol: float, atol: float,
                 batch_size: int = 128) -> Setup:
    """examples/digits_classification.py's classifier with ``NeuralODE(regularization=...)``."""
    x_train, y_train, x_test, y_test = digits_classification.load_digits()
    field = CountedFunc(digits_classification.Field())
    model = digits_classification.Classifier(
        NeuralODE(field, (0.0, 1.0), method="dopri5", rtol=rtol, atol=atol, regularization=regularization))
    generator = torch.Generator().manual_seed(seed)
    cross_entropy = nn.CrossEntropyLoss()

    def loss() -> Tensor:
        index = torch.randint(0, len(x_train), (batch_size,), generator=generator)
        task_loss = cross_entropy(model(x_train[index]), y_train[index])
        return task_loss if regularization is None else task_loss + model.ode.regularization

    def predict() -> Tensor:
        model.eval()  # a training signal only: eval mode predicts without the term
        try:
            return model(x_test)
        finally:
            model.train()  # predictions are also taken during training

    def score(logits: Tensor) -> tuple[float, float]:
        return float(cross_entropy(logits, y_test)), float((logits.argmax(-1) == y_test).float().mean())

    return Setup(field, list(model.parameters()), loss, predict, score)


def lotka_volterra_setup(regularization: Regularizer | None, seed: int, rtol: float, atol: float) -> Setup:
    """examples/lotka_volterra.py's field fitted to 5-point segments with ``odegrad.solve``."""
    task = lotka_volterra.lotka_volterra_task()
    field = CountedFunc(lotka_volterra.Field())
    times = task.t[:task.segment]
    batches: Iterator[tuple[Tensor, Tensor]] = task.batches(seed)
    test_y0, test_target = task.test_segments()

    def solve(y0: Tensor, regularization: Regularizer | None) -> odegrad.solvers.Solution:
        return odegrad.solve(field, y0, times, method="dopri5", rtol=rtol, atol=atol, regularization=regularization)

    def loss() -> Tensor:
        y0, target = next(batches)
        solution = solve(y0, regularization)
        task_loss = (solution.ys - target).pow(2).mean()
        return task_loss if regularization is None else task_loss + solution.regularization

    def score(prediction: Tensor) -> tuple[float, float]:
        return float((prediction - test_target).pow(2).mean()), math.nan

    return Setup(field, list(field.parameters()), loss, lambda: solve(test_y0, None).ys, score)


def lotka_volterra_true_nfe(rtol: float, atol: float) -> int:
    """NFE of the test-set prediction of :func:`lotka_volterra_setup` by the true field."""
    task = lotka_volterra.lotka_volterra_task()
    field = CountedFunc(lotka_volterra.lotka_volterra)
    odegrad.odeint(field, task.test_segments()[0], task.t[:task.segment], method="dopri5", rtol=rtol, atol=atol)
    return field.nfe


TASKS = {
    "digits": Task("digits", "test cross-entropy", 1e-5, 1e-5, 300, 1e-2,
                   {"local-unbiased": 100.0, "local-biased": 100.0, "RNODE": 0.1, f"Taylor-{TAYLOR_ORDER}": 1e-2},
                   digits_setup),
    "lotka-volterra": Task("lotka-volterra", "test MSE", 1e-6, 1e-8, 300, 3e-3,
                           {"local-unbiased": 1e-3, "local-biased": 1e-3, "RNODE": 1e-4,
                            f"Taylor-{TAYLOR_ORDER}": 1e-5},
                           lotka_volterra_setup, lotka_volterra_true_nfe),
}


@dataclass
class Result:
    """One trained model: training seconds, NFE and median seconds of one test-set prediction,
    test loss and accuracy (NaN for regression), and (iteration, NFE of one test-set prediction)
    over training."""

    name: str
    seed: int
    train_seconds: float
    nfe: int
    predict_seconds: float
    test_loss: float
    accuracy: float
    nfe_curve: list[tuple[int, int]]


def train(task: Task, name: str, seed: int, *, weight: float | None = None, iterations: int | None = None,
          repeats: int = 5, progress: bool = True) -> Result:
    """Train ``task``'s model with regularizer ``name`` (``weight`` overrides the task's) from
    seed ``seed`` with Adam, then measure its prediction on the test set, unregularized."""
    generator = torch.Generator().manual_seed(seed)
    regularization = None if name == REFERENCE else REGULARIZERS[name](
        task.weights[name] if weight is None else weight, generator)
    torch.manual_seed(seed)
    setup = task.setup(regularization, seed, task.rtol, task.atol)
    optimizer = torch.optim.Adam(setup.parameters, lr=task.lr)
    iterations = task.iterations if iterations is None else iterations
    run = Run(name)

    def prediction_nfe() -> int:
        setup.field.nfe = 0
        with torch.no_grad():
            setup.predict()
        return setup.field.nfe

    # training seconds only: the prediction NFE is counted off the clock, the test metrics once, after training
    for _ in timed_iterations(run, iterations, prediction_nfe, eval_every=max(1, iterations // 20), progress=progress):
        optimizer.zero_grad()
        setup.loss().backward()
        optimizer.step()
    seconds = []
    with torch.no_grad():
        for _ in range(repeats):
            setup.field.nfe = 0
            start = time.perf_counter()
            prediction = setup.predict()
            seconds.append(time.perf_counter() - start)
    test_loss, accuracy = setup.score(prediction)
    return Result(name, seed, run.train_seconds, setup.field.nfe, statistics.median(seconds), test_loss, accuracy,
                  [(i, int(nfe)) for _, i, nfe in run.curve])


def plot(task: Task, results: list[Result], out: Path) -> Path:
    """NFE of a test-set prediction (without the term) over training, one line per regularizer."""
    import matplotlib.pyplot as plt  # after _harness chose the Agg backend

    fig, ax = plt.subplots(figsize=(8.5, 4))
    for index, result in enumerate(results):
        ax.plot(*zip(*result.nfe_curve), "o-", ms=3, color=colour(index), label=result.name)
    ax.set(xlabel="training iteration", ylabel="NFE of one test-set prediction",
           title=f"{task.name}: cost of a prediction (dopri5, no regularization term) during training")
    place_legend(ax)
    return save_figure(fig, out / "regularization.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few iterations only (smoke run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--out", type=Path, default=Path("examples_out"), help="folder for the plot")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = TASKS[args.task]
    iterations = 20 if args.quick else task.iterations
    print(f"{task.name}: {iterations} iterations, dopri5 rtol={task.rtol:g} atol={task.atol:g}, seed {args.seed}")
    print("| regularizer | weight | train time [s] | NFE/prediction | prediction [ms] | test loss | accuracy |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for name in NAMES:
        r = train(task, name, args.seed, iterations=iterations, progress=not args.no_progress)
        results.append(r)
        print(f"| {name} | {task.weights.get(name, 0):g} | {r.train_seconds:.2f} | {r.nfe} | "
              f"{1e3 * r.predict_seconds:.1f} | {r.test_loss:.4g} | {r.accuracy:.4f} |")
    print(f"\nsaved {plot(task, results, args.out)}")


if __name__ == "__main__":
    main()
