"""odegrad demo: train a TL-NODE on the spiral task and compare it with adaptive dopri5.

torchdiffeq's spiral y' = (y³)A, A = [[-0.1, 2], [-2, -0.1]], y0 = [2, 0], at 120 points on [0, 20];
both models learn f(y) = MLP(y³) from random 10-point segments, the TL-NODE with ``steps`` Taylor
steps of order ``order`` and a learned midpoint per interval, the baseline with dopri5 (direct
backprop). Then the TL-NODE is exported to ONNX, served with onnxruntime and checked against PyTorch.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ._checks import check_positive
from .api import odeint
from .errors import InvalidInput
from .models import TLNODE
from .solvers import CountedFunc, LearnedMidpoint

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
SEGMENT, BATCH, LR = 10, 16, 3e-3  # points per training segment, segments per batch, Adam step
Curve = list[tuple[float, float]]  # (training seconds, test MSE) checkpoints
Rollout = Callable[[Tensor, int], Tensor]  # (y0: [B, 2], intervals) -> [intervals + 1, B, 2]


class SpiralField(nn.Sequential):
    """f(t, y) = MLP(y³), torchdiffeq's spiral-demo model. Shapes: ``[B, 2] -> [B, 2]``."""

    def __init__(self, hidden: int = 50):
        super().__init__(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(y ** 3)


def spiral_data(points: int = 120, t_end: float = 20.0) -> tuple[Tensor, Tensor]:
    """Times ``[points]`` and the true trajectory ``[points, 2]`` (dopri5, tight tolerance)."""
    a = torch.tensor(SPIRAL_A)
    t = torch.linspace(0.0, t_end, points)
    with torch.no_grad():
        return t, odeint(lambda _t, y: (y ** 3) @ a, torch.tensor([2.0, 0.0]), t, rtol=1e-8, atol=1e-10)


def train(name: str, rollout: Rollout, params: Iterable[Tensor], ys: Tensor, iterations: int,
          progress: bool) -> Curve:
    """Fit ``rollout`` to random segments of ``ys: [T, 2]`` (Adam, MSE); the test loss is the MSE
    over every segment, measured off the clock."""
    optimizer = torch.optim.Adam(params, lr=LR)
    generator = torch.Generator().manual_seed(0)
    test_segments = ys[torch.arange(len(ys) - SEGMENT + 1) + torch.arange(SEGMENT)[:, None]]  # [SEGMENT, B, 2]
    eval_every = max(1, min(25, iterations // 4))

    def test_loss() -> float:
        with torch.no_grad():
            return float((rollout(test_segments[0], SEGMENT - 1) - test_segments).pow(2).mean())

    curve, elapsed = [(0.0, test_loss())], 0.0
    for i in (bar := tqdm(range(1, iterations + 1), desc=name, disable=not progress, leave=False)):
        starts = torch.randint(0, len(ys) - SEGMENT, (BATCH,), generator=generator)
        target = ys[starts + torch.arange(SEGMENT)[:, None]]  # [SEGMENT, BATCH, 2]
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = (rollout(target[0], SEGMENT - 1) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        if i % eval_every == 0 or i == iterations:
            curve.append((elapsed, test_loss()))
            bar.set_postfix(train=f"{loss.item():.4g}", test=f"{curve[-1][1]:.4g}")
    return curve


def plot(path: Path, ys: Tensor, rollouts: dict[str, Rollout], curves: dict[str, Curve], target: float) -> Path:
    """Each model's full-length trajectory beside the learning curves and the target loss."""
    from matplotlib.figure import Figure  # lazy: keeps `odegrad --help` fast; no pyplot, no GUI backend

    fig = Figure(figsize=(12, 4.5), layout="tight")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ys[:, 0], ys[:, 1], "k-", label="true")
    for index, (name, rollout) in enumerate(rollouts.items()):
        with torch.no_grad():
            pred = rollout(ys[0], len(ys) - 1)
        ax1.plot(pred[:, 0], pred[:, 1], ("--", ":")[index], color=f"C{index}", label=name)
        ax2.semilogy(*zip(*curves[name]), color=f"C{index}", label=name)
    ax2.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:.4g}")
    ax1.set_title("spiral trajectories")
    ax2.set(xlabel="training time [s]", ylabel=f"test MSE ({SEGMENT}-point segments)")
    for ax in (ax1, ax2):
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def run(args: argparse.Namespace) -> int:
    """``odegrad demo``: train, compare, plot, export and serve; exit status 0 when served outputs match."""
    for flag in ("iters", "order", "steps", "threads"):
        if getattr(args, flag) < 1:
            raise InvalidInput(f"--{flag}", getattr(args, flag), "a positive integer")
    check_positive("--rtol", args.rtol)
    check_positive("--atol", args.atol)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InvalidInput("--out", args.out, "a folder (new or existing) for the plot and the ONNX file, "
                           "not an existing file")
    from odegrad.export import serve_and_compare  # the core never imports export; the demo composes both

    torch.set_num_threads(args.threads)
    iterations, progress, out = 60 if args.quick else args.iters, not args.no_progress, Path(args.out)
    t, ys = spiral_data()
    torch.manual_seed(0)
    model = TLNODE(SpiralField(), order=args.order, steps=args.steps, horizon=float(t[1] - t[0]),
                   remainder=LearnedMidpoint(2, hidden=16))
    torch.manual_seed(0)
    field = CountedFunc(SpiralField())  # the same initial field, its evaluations counted

    def dopri5(y0: Tensor, intervals: int) -> Tensor:
        return odeint(field, y0, t[: intervals + 1], rtol=args.rtol, atol=args.atol)

    tl, ref = f"TL-NODE p={args.order} s={args.steps}", "dopri5"
    curves = {tl: train(tl, model.trajectory, model.parameters(), ys, iterations, progress),
              ref: train(ref, dopri5, field.parameters(), ys, iterations, progress)}
    model.eval()
    field.nfe = 0
    with torch.no_grad():
        dopri5(ys[: len(ys) - SEGMENT + 1], SEGMENT - 1)  # the test segments
    nfe = {tl: model.nfe_per_forward(), ref: field.nfe / (SEGMENT - 1)}
    target = 1.05 * max(min(loss for _, loss in curve) for curve in curves.values())
    reached = {name: next(s for s, loss in curve if loss <= target) for name, curve in curves.items()}
    change = curves[tl][-1][1] / curves[ref][-1][1] - 1
    print(f"spiral task: {len(t)} points on [0, {float(t[-1]):g}], {iterations} iterations of {BATCH} random "
          f"{SEGMENT}-point segments; dopri5 rtol={args.rtol:g} atol={args.atol:g}\n"
          f"target test MSE {target:.4g} = the worse of the two models' best test MSEs + 5%\n"
          "| model | time to target [s] | NFE per interval | train time [s] | final test MSE |\n|---|---|---|---|---|")
    for name, curve in curves.items():
        print(f"| {name} | {reached[name]:.2f} | {nfe[name]:.1f} | {curve[-1][0]:.2f} | {curve[-1][1]:.4g} |")
    print(f"{tl} vs {ref}: speed-up to the target {reached[ref] / reached[tl]:.2f}x, final test MSE "
          f"{abs(change):.1%} {'above' if change > 0 else 'below'} {ref}'s.")
    print(f"plot saved to {plot(out / 'spiral_tlnode.png', ys, {tl: model.trajectory, ref: dopri5}, curves, target)}")
    served = serve_and_compare(model, ys[:16].clone(), path=out / "spiral_tlnode.onnx", threads=args.threads)
    print(f"exported to {served.path}; onnxruntime vs eager PyTorch:\n{served}")
    return 0 if served.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand to the ``odegrad`` command."""
    parser = subparsers.add_parser("demo", help="train a TL-NODE on the spiral, compare with dopri5, export to ONNX, "
                                   "serve", description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400, help="training iterations per model (default 400)")
    parser.add_argument("--order", type=int, default=1, help="Taylor order of the TL-NODE (default 1)")
    parser.add_argument("--steps", type=int, default=1, help="Taylor steps per observation interval (default 1)")
    parser.add_argument("--rtol", type=float, default=1e-7, help="dopri5 rtol (default 1e-7)")
    parser.add_argument("--atol", type=float, default=1e-9, help="dopri5 atol (default 1e-9)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small models run fastest single-threaded)")
    parser.add_argument("--out", default="demo_out", help="folder for the plot and the ONNX file (default demo_out)")
    parser.add_argument("--quick", action="store_true", help="60 iterations only (smoke run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(run=run)
