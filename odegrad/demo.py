"""odegrad demo: train a TL-NODE on the spiral task and compare it with adaptive dopri5.

The spiral is torchdiffeq's demo system y' = (y³)A, A = [[-0.1, 2], [-2, -0.1]], y0 = [2, 0].
Both models learn the same MLP vector field f(y) = MLP(y³) from random short trajectory segments;
the TL-NODE integrates each observation interval with ``steps`` Taylor steps of order ``order``
and a learned midpoint, the baseline with dopri5 (direct backprop). Reported: training wall-clock
time until the test loss first reaches a common target, NFE per forward pass and final test loss.

The training/comparison helpers here (:func:`fit`, :func:`time_to_target`,
:func:`comparison_table`) are shared with ``examples/`` and ``benchmarks/bench_tlnode.py``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))


# ---------------------------------------------------------------------------------------------
# training / comparison helpers


@dataclass
class Run:
    """One training run: ``curve`` holds (training seconds, iteration, test loss) checkpoints;
    evaluation time is excluded from the training seconds."""

    name: str
    curve: list[tuple[float, int, float]] = field(default_factory=list)
    nfe_per_forward: float = math.nan
    metric: float = math.nan
    metric_name: str = ""

    @property
    def train_seconds(self) -> float:
        return self.curve[-1][0] if self.curve else 0.0

    @property
    def final_loss(self) -> float:
        return self.curve[-1][2] if self.curve else math.nan

    @property
    def best_loss(self) -> float:
        return min(c[2] for c in self.curve) if self.curve else math.nan


def fit(step: Callable[[], float], iterations: int, evaluate: Callable[[], float], *,
        eval_every: int, name: str, progress: bool = True) -> Run:
    """Run ``step()`` (one optimisation step, returns the training loss) ``iterations`` times,
    calling ``evaluate()`` (test loss, not timed) before training and every ``eval_every`` steps."""
    from tqdm import tqdm

    run = Run(name)
    run.curve.append((0.0, 0, float(evaluate())))
    elapsed = 0.0
    bar = tqdm(range(1, iterations + 1), desc=name, disable=not progress, leave=False)
    for i in bar:
        start = time.perf_counter()
        loss = step()
        elapsed += time.perf_counter() - start
        if i % eval_every == 0 or i == iterations:
            run.curve.append((elapsed, i, float(evaluate())))
            bar.set_postfix(train=f"{loss:.4g}", test=f"{run.curve[-1][2]:.4g}")
    return run


def time_to_target(run: Run, target: float) -> float:
    """Training seconds until the test loss first drops to ``target`` (NaN if never)."""
    for seconds, _, loss in run.curve:
        if loss <= target:
            return seconds
    return math.nan


def common_target(runs: list[Run], slack: float = 1.05) -> float:
    """A test loss every run reaches: the worst of the runs' best losses, times ``slack``."""
    return max(run.best_loss for run in runs) * slack


def comparison_table(runs: list[Run], target: float, reference: str | None = None) -> str:
    """Markdown table: time to the common target loss, speed-up vs ``reference`` (default: the
    last run), NFE per forward, total training time, final test loss and metric."""
    ref = next((r for r in runs if r.name == reference), runs[-1])
    ref_time = time_to_target(ref, target)
    metric_name = next((r.metric_name for r in runs if r.metric_name), "")
    head = ["model", f"time to loss {target:.4g} [s]", f"speed-up vs {ref.name}", "NFE/forward",
            "train time [s]", "final test loss"] + ([metric_name] if metric_name else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        reached = time_to_target(run, target)
        speedup = ref_time / reached if reached > 0 else math.nan
        cells = [run.name, f"{reached:.2f}", f"{speedup:.2f}x", f"{run.nfe_per_forward:.1f}",
                 f"{run.train_seconds:.2f}", f"{run.final_loss:.4g}"]
        if metric_name:
            cells.append(f"{run.metric:.4g}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


class CountingField(nn.Module):
    """``func(t, y) = field(t, y)`` that counts its calls (NFE as the field sees it)."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        return self.field(t, y)


def comparison_parser(description: str, *, iters: int, steps: int, rtol: float, atol: float,
                      ) -> argparse.ArgumentParser:
    """Command-line options shared by the TL-NODE-vs-adaptive-solver scripts in examples/."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--iters", type=int, default=iters)
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--rtol", type=float, default=rtol)
    parser.add_argument("--atol", type=float, default=atol)
    parser.add_argument("--baseline", nargs="+", default=["dopri5"],
                        help="adaptive methods to compare with (e.g. dopri5 torchdiffeq:dopri5)")
    parser.add_argument("--out", default="examples_out")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def plot_learning_curves(ax, runs: list[Run], ylabel: str, label: Callable[[Run], str] = lambda run: run.name,
                         log: bool = True) -> None:
    """Test loss against training wall-clock time, one line per run."""
    for run in runs:
        (ax.semilogy if log else ax.plot)([c[0] for c in run.curve], [c[2] for c in run.curve], label=label(run))
    ax.set_xlabel("training time [s]")
    ax.set_ylabel(ylabel)
    ax.legend()


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# the spiral task


class SpiralField(nn.Module):
    """f(t, y) = MLP(y³), torchdiffeq's spiral-demo model. Shapes: ``[B, 2] -> [B, 2]``."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = mlp([2, hidden, 2])

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y ** 3)


def spiral_data(points: int = 120, t_end: float = 20.0) -> tuple[Tensor, Tensor]:
    """Times ``[points]`` and the true trajectory ``[points, 1, 2]`` (dopri5, tight tolerance)."""
    from .api import odeint

    a = torch.tensor(SPIRAL_A)
    t = torch.linspace(0.0, t_end, points)
    with torch.no_grad():
        ys = odeint(lambda _t, y: (y ** 3) @ a, torch.tensor([[2.0, 0.0]]), t, rtol=1e-8, atol=1e-10)
    return t, ys


@dataclass
class TrajectoryTask:
    """System identification from sampled trajectories: ``ys: [T, N, D]`` at times ``t: [T]``
    (N trajectories), trained on random ``batch_time``-point segments; tested on every segment of
    ``test_ys: [T, M, D]`` (default: of ``ys``, the one-trajectory setting of the spiral demo)."""

    t: Tensor
    ys: Tensor
    test_ys: Tensor | None = None
    iterations: int = 400
    batch_size: int = 16
    batch_time: int = 10
    lr: float = 3e-3
    eval_every: int = 25
    seed: int = 0

    @property
    def dt(self) -> float:
        return float(self.t[1] - self.t[0])

    def segments(self, ys: Tensor, starts: Tensor, trajectories: Tensor) -> tuple[Tensor, Tensor]:
        """Initial states ``[B, D]`` and targets ``[batch_time, B, D]`` of the given segments."""
        segment = torch.stack([ys[starts + i, trajectories] for i in range(self.batch_time)])
        return segment[0], segment

    def test_segments(self) -> tuple[Tensor, Tensor]:
        ys = self.ys if self.test_ys is None else self.test_ys
        starts = torch.arange(0, len(self.t) - self.batch_time + 1)
        grid_s, grid_n = torch.meshgrid(starts, torch.arange(ys.shape[1]), indexing="ij")
        return self.segments(ys, grid_s.reshape(-1), grid_n.reshape(-1))

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        out = []
        for _ in range(self.iterations):
            starts = torch.randint(0, len(self.t) - self.batch_time, (self.batch_size,), generator=generator)
            which = torch.randint(0, self.ys.shape[1], (self.batch_size,), generator=generator)
            out.append(self.segments(self.ys, starts, which))
        return out


def train_trajectory_model(setup: TrajectoryTask, name: str, predict: Callable[[Tensor, int], Tensor],
                           params: list[Tensor], progress: bool = True) -> Run:
    """Train ``predict(y0, intervals) -> [intervals + 1, *y0.shape]`` on random segments with Adam
    and MSE; test loss = MSE over every test segment."""
    return _train(setup, name, predict, params, progress)


def tlnode_predictor(model) -> Callable[[Tensor, int], Tensor]:
    return lambda y0, intervals: model.trajectory(y0, intervals)


def adaptive_predictor(field_: nn.Module, setup: TrajectoryTask, method: str, rtol: float, atol: float,
                       nfe: list[float]) -> Callable[[Tensor, int], Tensor]:
    """Predictions by ``odegrad.solve(method=...)`` over the segment's times; appends the NFE per
    observation interval of each call to ``nfe``."""
    from .api import solve

    def predict(y0: Tensor, intervals: int) -> Tensor:
        solution = solve(field_, y0, setup.t[: intervals + 1], method=method, rtol=rtol, atol=atol)
        nfe.append(solution.stats.nfe_forward / intervals)
        return solution.ys

    return predict


def _train(setup: TrajectoryTask, name: str, predict: Callable[[Tensor, int], Tensor],
           params: list[Tensor], progress: bool) -> Run:
    """Train ``predict(y0, intervals) -> [intervals + 1, *y0.shape]`` on random segments;
    test loss = MSE over every segment of the trajectory."""
    optimizer = torch.optim.Adam(params, lr=setup.lr)
    batches = iter(setup.batches())
    intervals = setup.batch_time - 1

    def step() -> float:
        y0, target = next(batches)
        optimizer.zero_grad()
        loss = (predict(y0, intervals) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    test_y0, test_target = setup.test_segments()

    def evaluate() -> float:
        with torch.no_grad():
            return float((predict(test_y0, intervals) - test_target).pow(2).mean())

    return fit(step, setup.iterations, evaluate, eval_every=setup.eval_every, name=name, progress=progress)


def build_tlnode(setup: TrajectoryTask, order: int = 1, steps: int = 1, hidden: int = 50):
    """A TL-NODE whose forward advances one observation interval of the spiral data."""
    from .models import TLNODE
    from .solvers import LearnedMidpoint

    torch.manual_seed(setup.seed)
    field_ = SpiralField(hidden)
    return TLNODE(field_, order=order, steps=steps, horizon=setup.dt, remainder=LearnedMidpoint(2, hidden=16))


def train_spiral_tlnode(iterations: int = 400, order: int = 1, steps: int = 1, *, progress: bool = True,
                        setup: TrajectoryTask | None = None) -> tuple[nn.Module, Tensor]:
    """Train a TL-NODE on the spiral task. Returns ``(model, example_input)``: the trained
    :class:`~odegrad.models.TLNODE` (``forward(y0: [B, 2]) -> [B, 2]`` advances one observation
    interval) and an example input ``[16, 2]`` (spiral states) for export."""
    model, _, setup = _train_tlnode(iterations, order, steps, progress, setup)
    return model.eval(), setup.test_segments()[0][:16].clone()


def _train_tlnode(iterations, order, steps, progress, setup):
    setup = setup or TrajectoryTask(*spiral_data(), iterations=iterations)
    model = build_tlnode(setup, order, steps)
    run = _train(setup, f"TL-NODE p={order} s={steps}", tlnode_predictor(model),
                 list(model.parameters()), progress)
    run.nfe_per_forward = model.nfe_per_forward()
    return model, run, setup


def _train_dopri5(setup: TrajectoryTask, progress: bool, rtol: float, atol: float, method: str = "dopri5"):
    torch.manual_seed(setup.seed)
    field_ = SpiralField()
    nfe: list[float] = []
    run = _train(setup, method, adaptive_predictor(field_, setup, method, rtol, atol, nfe),
                 list(field_.parameters()), progress)
    run.nfe_per_forward = sum(nfe) / len(nfe)
    return field_, run


def _plot(out_dir: Path, setup: TrajectoryTask, tl_model, dopri_field, runs: list[Run]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .api import odeint

    with torch.no_grad():
        tl = tl_model.trajectory(setup.ys[0], len(setup.t) - 1)[:, 0]
        dp = odeint(dopri_field, setup.ys[0], setup.t)[:, 0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.plot(setup.ys[:, 0, 0], setup.ys[:, 0, 1], "k-", label="true")
    ax1.plot(tl[:, 0], tl[:, 1], "--", label=runs[0].name)
    ax1.plot(dp[:, 0], dp[:, 1], ":", label="dopri5")
    ax1.set_title("spiral trajectories")
    ax1.legend()
    plot_learning_curves(ax2, runs, "test MSE")
    return save_figure(fig, out_dir / "spiral_tlnode.png")


def run(args: argparse.Namespace) -> int:
    from .errors import InvalidInput

    for name in ("iters", "order", "steps"):
        value = getattr(args, name)
        if value < 1:
            raise InvalidInput(f"--{name}", value, "a positive integer")
    torch.set_num_threads(args.threads)
    iterations = 60 if args.quick else args.iters
    setup = TrajectoryTask(*spiral_data(), iterations=iterations, eval_every=max(1, min(25, iterations // 4)))
    progress = not args.no_progress
    tl_model, tl_run, _ = _train_tlnode(iterations, args.order, args.steps, progress, setup)
    tl_model.eval()
    dopri_field, dopri_run = _train_dopri5(setup, progress, args.rtol, args.atol)
    runs = [tl_run, dopri_run]
    target = common_target(runs)
    print(f"spiral task: {len(setup.t)} points on [0, {float(setup.t[-1]):g}], {iterations} iterations, "
          f"batch {setup.batch_size} x {setup.batch_time} points, dopri5 rtol={args.rtol:g} atol={args.atol:g}; "
          f"NFE per observation interval")
    print(comparison_table(runs, target, reference="dopri5"))
    path = _plot(Path(args.out), setup, tl_model, dopri_field, runs)
    print(f"plot saved to {path}")
    return _export_and_serve(tl_model, setup.test_segments()[0][:16].clone(), Path(args.out), args.threads)


def _export_and_serve(model: nn.Module, example: Tensor, out_dir: Path, threads: int) -> int:
    """Export the trained TL-NODE to ONNX, serve it with onnxruntime and check it against PyTorch.
    (The demo is an application of both layers; the library core never imports odegrad.export.)"""
    from odegrad.export import serve_and_compare

    report = serve_and_compare(model, example, path=out_dir / "spiral_tlnode.onnx", threads=threads)
    print(f"exported to {out_dir / 'spiral_tlnode.onnx'}; onnxruntime vs eager PyTorch:")
    print(report)
    return 0 if report.ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo",
                                   help="train a TL-NODE on the spiral, compare with dopri5, export to ONNX, serve",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400, help="training iterations per model (default 400)")
    parser.add_argument("--order", type=int, default=1, help="Taylor order of the TL-NODE (default 1)")
    parser.add_argument("--steps", type=int, default=1, help="Taylor steps per observation interval (default 1)")
    parser.add_argument("--rtol", type=float, default=1e-7, help="dopri5 rtol (default 1e-7)")
    parser.add_argument("--atol", type=float, default=1e-9, help="dopri5 atol (default 1e-9)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small models run fastest single-threaded)")
    parser.add_argument("--out", default="demo_out", help="directory for the plot (default ./demo_out)")
    parser.add_argument("--quick", action="store_true", help="a few iterations only (smoke run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(run=run)
