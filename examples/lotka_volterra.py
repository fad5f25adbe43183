"""System identification: learn the Lotka–Volterra vector field from simulated trajectories.

    x' = a·x − b·x·y,   y' = d·x·y − c·y,   (a, b, c, d) = (2/3, 4/3, 1, 1)

Training data: 24 trajectories from random initial states on t ∈ [0, 10] (41 points, Δt = 0.25),
test data: 8 more. The same MLP vector field is trained as a TL-NODE (order 1, one Taylor step per
observation interval, learned midpoint) and with adaptive dopri5 (direct backprop), on random
5-point segments with Adam and MSE. Prints the common target test loss and how it is chosen, each
model's training time to reach it, NFE per observation interval and final test MSE; saves a plot.

    python examples/lotka_volterra.py            # ~1-3 minutes on 2 cores
    python examples/lotka_volterra.py --quick    # smoke run
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from _harness import (
    Run,
    Target,
    colour,
    common_target,
    comparison_parser,
    comparison_report,
    compiled_loss,
    place_legend,
    plot_learning_curves,
    save_figure,
    timed_iterations,
)
from torch import Tensor, nn

import odegrad
from odegrad.models import TLNODE
from odegrad.solvers import CountedFunc, LearnedMidpoint

A, B, C, D = 2 / 3, 4 / 3, 1.0, 1.0


def lotka_volterra(t: Tensor, y: Tensor) -> Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack([A * x - B * x * v, D * x * v - C * v], dim=-1)


def simulate(n: int, seed: int, points: int = 41, t_end: float = 10.0) -> tuple[Tensor, Tensor]:
    """Times ``[points]`` and trajectories ``[points, n, 2]`` from initial states in [0.5, 2]²."""
    generator = torch.Generator().manual_seed(seed)
    y0 = 0.5 + 1.5 * torch.rand(n, 2, generator=generator)
    t = torch.linspace(0.0, t_end, points)
    with torch.no_grad():
        return t, odegrad.odeint(lotka_volterra, y0, t, rtol=1e-9, atol=1e-10)


class Field(nn.Module):
    """Learned vector field f(t, y) = MLP(y): ``[B, 2] -> [B, 2]``."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


@dataclass
class TrajectoryTask:
    """Trajectories ``ys: [T, N, D]`` at times ``t: [T]``, cut into ``segment``-point pieces:
    random ones for training, every piece of ``test_ys: [T, M, D]`` (default ``ys``) for testing."""

    t: Tensor
    ys: Tensor
    test_ys: Tensor | None = None
    batch_size: int = 32
    segment: int = 5

    @property
    def dt(self) -> float:
        return float(self.t[1] - self.t[0])

    def segments(self, ys: Tensor, starts: Tensor, which: Tensor) -> tuple[Tensor, Tensor]:
        """Initial states ``[B, D]`` and targets ``[segment, B, D]`` of the given segments."""
        target = ys[starts + torch.arange(self.segment)[:, None], which]
        return target[0], target

    def test_segments(self) -> tuple[Tensor, Tensor]:
        ys = self.ys if self.test_ys is None else self.test_ys
        starts, which = torch.meshgrid(torch.arange(len(self.t) - self.segment + 1), torch.arange(ys.shape[1]),
                                       indexing="ij")
        return self.segments(ys, starts.reshape(-1), which.reshape(-1))

    def to(self, device: torch.device) -> TrajectoryTask:
        """The same task with its data on ``device``."""
        test_ys = None if self.test_ys is None else self.test_ys.to(device)
        return TrajectoryTask(self.t.to(device), self.ys.to(device), test_ys, self.batch_size, self.segment)

    def batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        while True:
            starts = torch.randint(0, len(self.t) - self.segment, (self.batch_size,), generator=generator)
            which = torch.randint(0, self.ys.shape[1], (self.batch_size,), generator=generator)
            yield self.segments(self.ys, starts, which)


def lotka_volterra_task(seed: int = 0) -> TrajectoryTask:
    """24 training and 8 test trajectories from random initial states."""
    t, train_ys = simulate(24, seed)
    _, test_ys = simulate(8, seed + 1)
    return TrajectoryTask(t, train_ys, test_ys)


Rollout = Callable[[Tensor, int], Tensor]  # (y0: [B, D], intervals) -> [intervals + 1, B, D]


def train(name: str, rollout: Rollout, params: Iterable[Tensor], task: TrajectoryTask, iterations: int,
          lr: float, progress: bool, seed: int = 0, compile_mode: str | None = None) -> Run:
    """Fit ``rollout`` to random segments (Adam, MSE); the test loss is the MSE over every test
    segment. ``compile_mode``: compile the batch loss (see ``compiled_loss``)."""
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)  # the fastest Adam, for every run
    batches = task.batches(seed)
    test_y0, test_target = task.test_segments()
    intervals = task.segment - 1
    device = task.ys.device

    def test_loss() -> float:
        with torch.no_grad():
            return float((rollout(test_y0, intervals) - test_target).pow(2).mean())

    def batch_loss(y0: Tensor, target: Tensor) -> Tensor:
        return (rollout(y0, intervals) - target).pow(2).mean()

    run = Run(name)
    batch_loss = compiled_loss(run, batch_loss, compile_mode, next(task.batches(seed + 1)), device)
    for _ in timed_iterations(run, iterations, test_loss, eval_every=max(1, min(25, iterations // 4)),
                              progress=progress, device=device):
        y0, target = next(batches)
        optimizer.zero_grad()
        loss = batch_loss(y0, target)
        loss.backward()
        optimizer.step()
    return run


def compare(task: TrajectoryTask, make_field: Callable[[], nn.Module], iterations: int, order: int, steps: int,
            baselines: list[str], rtol: float, atol: float, *, lr: float = 3e-3, progress: bool = True,
            seed: int = 0, compile_modes: tuple[str | None, ...] = (None,),
            ) -> tuple[list[Run], dict[str, Rollout]]:
    """Train a TL-NODE (once per entry of ``compile_modes``: None is eager) and, for each baseline
    method, the same field solved by that method (same initialisation and batches, on the task's
    device). Returns the runs and each run's rollout."""
    dim, device = task.ys.shape[-1], task.ys.device
    runs, rollouts = [], {}
    for mode in compile_modes:
        torch.manual_seed(seed)
        model = TLNODE(make_field(), order=order, steps=steps, horizon=task.dt,
                       remainder=LearnedMidpoint(dim, hidden=16)).to(device)
        run = train(f"TL-NODE p={order} s={steps}", model.trajectory, model.parameters(), task, iterations, lr,
                    progress, seed, mode)
        run.nfe_per_forward = model.nfe_per_forward()
        runs.append(run)
        rollouts[run.name] = model.trajectory
    for method in baselines:
        torch.manual_seed(seed)
        field = CountedFunc(make_field()).to(device)

        def rollout(y0: Tensor, intervals: int, field: CountedFunc = field, method: str = method) -> Tensor:
            return odegrad.odeint(field, y0, task.t[: intervals + 1], method=method, rtol=rtol, atol=atol)

        run = train(method, rollout, field.parameters(), task, iterations, lr, progress, seed)
        field.nfe = 0
        with torch.no_grad():
            rollout(task.test_segments()[0], task.segment - 1)
        run.nfe_per_forward = field.nfe / (task.segment - 1)
        runs.append(run)
        rollouts[method] = rollout
    return runs, rollouts


def plot(path: Path, task: TrajectoryTask, runs: list[Run], rollouts: dict[str, Rollout], target: Target) -> Path:
    import matplotlib.pyplot as plt

    test_ys = task.ys if task.test_ys is None else task.test_ys
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    with torch.no_grad():
        for index, (name, rollout) in enumerate(rollouts.items()):
            ys = rollout(test_ys[0, :3], len(task.t) - 1).cpu()
            for i in range(3):
                ax1.plot(ys[:, i, 0], ys[:, i, 1], "--" if index == 0 else ":", color=colour(index),
                         label=name if i == 0 else None)
    test_ys = test_ys.cpu()
    for i in range(3):
        ax1.plot(test_ys[:, i, 0], test_ys[:, i, 1], "k-", lw=0.8, label="true" if i == 0 else None)
    ax1.set_title("test trajectories (full rollout)")
    place_legend(ax1)
    plot_learning_curves(ax2, runs, f"test MSE ({task.segment}-point segments)", target)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = comparison_parser(__doc__.splitlines()[0], iters=400, steps=1, rtol=1e-7, atol=1e-9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    iterations = 40 if args.quick else args.iters
    task = lotka_volterra_task()
    runs, rollouts = compare(task.to(torch.device(args.device)), Field, iterations, args.order, args.steps,
                             args.baseline, args.rtol, args.atol, progress=not args.no_progress,
                             compile_modes=(None, args.compile) if args.compile else (None,))
    print(f"Lotka–Volterra identification, {iterations} iterations, rtol={args.rtol:g}, atol={args.atol:g}; "
          f"NFE per observation interval (Δt={task.dt:g})")
    target = common_target(runs)
    print(comparison_report(runs, target, reference=args.baseline[0]))
    path = plot(Path(args.out) / "lotka_volterra.png", task, runs, rollouts, target)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
