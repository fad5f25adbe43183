"""System identification: learn the Lotka–Volterra vector field from simulated trajectories.

    x' = a·x − b·x·y,   y' = d·x·y − c·y,   (a, b, c, d) = (2/3, 4/3, 1, 1)

Training data: 24 trajectories from random initial states on t ∈ [0, 10] (41 points, Δt = 0.25),
test data: 8 more. The same MLP vector field is trained as a TL-NODE (order 1, one Taylor step per
observation interval, learned midpoint) and with adaptive dopri5 (direct backprop). Prints time to a
common test loss, NFE per observation interval and final test MSE; saves a plot.

    python examples/lotka_volterra.py            # ~1-3 minutes on 2 cores
    python examples/lotka_volterra.py --quick    # smoke run
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import odegrad
from odegrad.demo import (
    Run,
    TrajectoryTask,
    adaptive_predictor,
    common_target,
    comparison_parser,
    comparison_table,
    mlp,
    plot_learning_curves,
    save_figure,
    tlnode_predictor,
    train_trajectory_model,
)
from odegrad.models import TLNODE
from odegrad.solvers import LearnedMidpoint

A, B, C, D = 2 / 3, 4 / 3, 1.0, 1.0


def lotka_volterra(t, y):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([A * x - B * x * v, D * x * v - C * v], dim=-1)


def simulate(n: int, seed: int, points: int = 41, t_end: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
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
        self.net = mlp([2, hidden, hidden, 2])

    def forward(self, t, y):
        return self.net(y)


def compare(iterations: int, order: int, steps: int, baselines: list[str], rtol: float, atol: float,
            progress: bool = True, seed: int = 0):
    """Train TL-NODE and each baseline method; returns (task, runs, models)."""
    t, train = simulate(24, seed)
    _, test = simulate(8, seed + 1)
    task = TrajectoryTask(t, train, test, iterations=iterations, batch_size=32, batch_time=5, lr=3e-3,
                          eval_every=max(1, min(25, iterations // 4)), seed=seed)
    torch.manual_seed(seed)
    model = TLNODE(Field(), order=order, steps=steps, horizon=task.dt, remainder=LearnedMidpoint(2, hidden=16))
    runs: list[Run] = [train_trajectory_model(task, f"TL-NODE p={order} s={steps}", tlnode_predictor(model),
                                              list(model.parameters()), progress)]
    runs[0].nfe_per_forward = model.nfe_per_forward()
    models = {runs[0].name: model}
    for method in baselines:
        torch.manual_seed(seed)
        field = Field()
        nfe: list[float] = []
        run = train_trajectory_model(task, method, adaptive_predictor(field, task, method, rtol, atol, nfe),
                                     list(field.parameters()), progress)
        run.nfe_per_forward = sum(nfe) / len(nfe)
        runs.append(run)
        models[method] = field
    return task, runs, models


def plot(path: Path, task: TrajectoryTask, runs: list[Run], models: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y0 = task.test_ys[0, :3]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    with torch.no_grad():
        for name, model in models.items():
            if isinstance(model, TLNODE):
                ys = model.trajectory(y0, len(task.t) - 1)
            else:
                ys = odegrad.odeint(model, y0, task.t)
            for i in range(3):
                ax1.plot(ys[:, i, 0], ys[:, i, 1], "--" if isinstance(model, TLNODE) else ":",
                         label=name if i == 0 else None)
    for i in range(3):
        ax1.plot(task.test_ys[:, i, 0], task.test_ys[:, i, 1], "k-", lw=0.8, label="true" if i == 0 else None)
    ax1.set_title("Lotka–Volterra: test trajectories (full rollout)")
    ax1.legend()
    plot_learning_curves(ax2, runs, "test MSE (5-point segments)")
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = comparison_parser(__doc__.splitlines()[0], iters=400, steps=1, rtol=1e-7, atol=1e-9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    iterations = 40 if args.quick else args.iters
    task, runs, models = compare(iterations, args.order, args.steps, args.baseline, args.rtol, args.atol,
                                 not args.no_progress)
    print(f"Lotka–Volterra identification, {iterations} iterations, rtol={args.rtol:g}, atol={args.atol:g}; "
          f"NFE per observation interval (Δt={task.dt:g})")
    print(comparison_table(runs, common_target(runs), reference=args.baseline[0]))
    path = Path(args.out) / "lotka_volterra.png"
    plot(path, task, runs, models)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
