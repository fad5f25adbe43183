"""Plumbing shared by the examples and ``benchmarks/bench_tlnode.py``: timing a training loop,
learning curves, a common target loss, the comparison report and plots.

The training loops themselves are written out in each example; :func:`timed_iterations` only
counts the seconds spent inside the loop body and records the test loss (off the clock).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

matplotlib.use("Agg")  # the examples write image files only

CPU = torch.device("cpu")


@dataclass
class Run:
    """One training run: ``curve`` holds (training seconds, iteration, test loss) checkpoints;
    evaluation time is excluded from the training seconds. ``metric`` is an optional second
    test measure (e.g. accuracy) named ``metric_name``; ``compile_seconds`` is the one-off
    ``torch.compile`` time of a compiled run (its first step, taken off the clock)."""

    name: str
    curve: list[tuple[float, int, float]] = field(default_factory=list)
    nfe_per_forward: float = math.nan
    metric: float = math.nan
    metric_name: str = ""
    compile_seconds: float = 0.0

    @property
    def train_seconds(self) -> float:
        return self.curve[-1][0] if self.curve else 0.0

    @property
    def final_loss(self) -> float:
        return self.curve[-1][2] if self.curve else math.nan

    @property
    def best_loss(self) -> float:
        return min(c[2] for c in self.curve) if self.curve else math.nan

    def seconds_to(self, loss: float) -> float:
        """Training seconds until the test loss first drops to ``loss`` (NaN if never)."""
        return next((seconds for seconds, _, value in self.curve if value <= loss), math.nan)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a clock read after it
    covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_iterations(run: Run, iterations: int, evaluate: Callable[[], float], *, eval_every: int,
                     progress: bool = True, device: torch.device = CPU) -> Iterator[int]:
    """Yield ``1..iterations`` to the caller's training loop. The seconds spent in the loop body
    (up to the ``device``'s completion of its work) count as training time; ``evaluate()`` (the
    test loss) runs off the clock before the first iteration, every ``eval_every`` iterations and
    after the last, appending to ``run.curve``."""
    from tqdm import tqdm

    run.curve.append((0.0, 0, float(evaluate())))
    elapsed = 0.0
    bar = tqdm(range(1, iterations + 1), desc=run.name, disable=not progress, leave=False)
    for i in bar:
        synchronize(device)
        start = time.perf_counter()
        yield i
        synchronize(device)
        elapsed += time.perf_counter() - start
        if i % eval_every == 0 or i == iterations:
            run.curve.append((elapsed, i, float(evaluate())))
            bar.set_postfix(test=f"{run.curve[-1][2]:.4g}")


def compiled_loss(run: Run, loss: Callable[..., torch.Tensor], mode: str | None, example: tuple,
                  device: torch.device) -> Callable[..., torch.Tensor]:
    """``loss`` itself (``mode`` None), or ``torch.compile(loss, fullgraph=True, mode=mode)``
    compiled off the clock: one loss and backward on the ``example`` arguments (shaped like a
    training batch; the gradients are discarded by the next ``zero_grad``), timed into
    ``run.compile_seconds``."""
    if mode is None:
        return loss
    compiled = torch.compile(loss, fullgraph=True, mode=None if mode == "default" else mode)
    start = time.perf_counter()
    compiled(*example).backward()
    synchronize(device)
    run.compile_seconds = time.perf_counter() - start
    run.name += f" compiled ({mode})"
    return compiled


@dataclass(frozen=True)
class Target:
    """The test loss that every compared run reaches, and the rule that chose it."""

    value: float
    rule: str

    def __str__(self) -> str:
        return f"{self.value:.4g} = {self.rule}"


def common_target(runs: list[Run], *, relative: float = 0.05, absolute: float = 0.0) -> Target:
    """The worst of the runs' best test losses, raised by ``relative`` (a fraction of it) and
    ``absolute`` (in loss units): a loss every run reaches."""
    value = max(run.best_loss for run in runs) * (1 + relative) + absolute
    margins = ([f"{relative:.0%}"] if relative else []) + ([f"{absolute:g}"] if absolute else [])
    return Target(value, " + ".join(["the worst of the runs' best test losses", *margins]))


def _relative(value: float, reference: float) -> str:
    """``value`` against ``reference``: a percentage for positive losses, else a difference."""
    word = "above" if value > reference else "below"
    if value > 0 and reference > 0:
        return f"{abs(value / reference - 1):.1%} {word}"
    return f"{abs(value - reference):.3g} {word}"


def comparison_report(runs: list[Run], target: Target, reference: str) -> str:
    """The target and how it was chosen, a markdown table (time to the target, speed-up vs the
    ``reference`` run, NFE per forward, training time, final test loss and metric), and for every
    other run one sentence setting its speed-up beside its final test loss."""
    ref = next(run for run in runs if run.name == reference)
    ref_seconds = ref.seconds_to(target.value)
    metric_name = next((run.metric_name for run in runs if run.metric_name), "")
    head = ["model", "time to target [s]", f"speed-up vs {ref.name}", "NFE/forward", "train time [s]",
            "compile [s] (off the clock)", "final test loss"] + ([metric_name] if metric_name else [])
    lines = [f"target test loss {target}", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        seconds = run.seconds_to(target.value)
        cells = [run.name, f"{seconds:.2f}", f"{ref_seconds / seconds:.2f}x" if seconds > 0 else "n/a",
                 f"{run.nfe_per_forward:.1f}", f"{run.train_seconds:.2f}",
                 f"{run.compile_seconds:.1f}" if run.compile_seconds else "–", f"{run.final_loss:.4g}"]
        lines.append("| " + " | ".join(cells + ([f"{run.metric:.4g}"] if metric_name else [])) + " |")
    for run in runs:
        if run is ref:
            continue
        seconds = run.seconds_to(target.value)
        sentence = (f"{run.name} vs {ref.name}: speed-up to the target "
                    f"{f'{ref_seconds / seconds:.2f}x' if seconds > 0 else 'n/a'}, final test loss "
                    f"{_relative(run.final_loss, ref.final_loss)} {ref.name}'s")
        if metric_name:
            sentence += f" ({metric_name} {run.metric:.4g} vs {ref.metric:.4g})"
        lines.append(sentence + ".")
    return "\n".join(lines)


def comparison_parser(description: str, *, iters: int, steps: int, rtol: float, atol: float,
                      ) -> argparse.ArgumentParser:
    """Command-line options shared by the TL-NODE-vs-adaptive-solver examples."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--iters", type=int, default=iters, help=f"training iterations (default {iters})")
    parser.add_argument("--order", type=int, default=1, help="Taylor order of the TL-NODE (default 1)")
    parser.add_argument("--steps", type=int, default=steps, help=f"Taylor steps per forward (default {steps})")
    parser.add_argument("--rtol", type=float, default=rtol, help=f"baseline rtol (default {rtol:g})")
    parser.add_argument("--atol", type=float, default=atol, help=f"baseline atol (default {atol:g})")
    parser.add_argument("--baseline", nargs="+", default=["dopri5"],
                        help="adaptive methods to compare with (e.g. dopri5 torchdiffeq:dopri5)")
    parser.add_argument("--compile", default=None, choices=["default", "reduce-overhead"],
                        help="torch.compile the TL-NODE's training loss and its backward (fullgraph; "
                             "reduce-overhead: CUDA graphs)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", default="examples_out", help="folder for the plot (default examples_out)")
    parser.add_argument("--quick", action="store_true", help="a few iterations only (smoke run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def colour(index: int) -> str:
    """The colour of the ``index``-th run, the same in every panel."""
    return f"C{index}"


def place_legend(ax: Axes) -> None:
    """A legend to the right of the axes, off the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")


def plot_learning_curves(ax: Axes, runs: list[Run], ylabel: str, target: Target, *,
                         label: Callable[[Run], str] = lambda run: run.name, log: bool = True) -> None:
    """Test loss against training seconds, one line per run (colours by :func:`colour`), and
    the target loss as a dashed line."""
    for index, run in enumerate(runs):
        (ax.semilogy if log else ax.plot)([c[0] for c in run.curve], [c[2] for c in run.curve],
                                          color=colour(index), label=label(run))
    ax.axhline(target.value, color="k", ls="--", lw=0.8, label=f"target {target.value:.4g}")
    ax.set_xlabel("training time [s]")
    ax.set_ylabel(ylabel)
    place_legend(ax)


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder, keeping outside legends) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
