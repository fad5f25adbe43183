"""Image classification with an ODE block on scikit-learn's digits (8×8, 10 classes, no download).

Model: Linear(64→32) → ODE block dz/dt = MLP(z) on t ∈ [0, 1] → Linear(32→10). The ODE block is a
TL-NODE (order 1, one Taylor step, learned midpoint) or the same field solved by adaptive dopri5
(``odegrad.models.NeuralODE``, direct backprop). Same initialisation, data order and optimiser.
Prints the common target test cross-entropy and how it is chosen, each model's training time to
reach it, NFE per forward pass, final test loss and accuracy; saves a plot.

    python examples/digits_classification.py            # ~1-3 minutes on 2 cores
    python examples/digits_classification.py --quick    # smoke run
"""

from __future__ import annotations

from pathlib import Path

import torch
from _harness import (
    CPU,
    Run,
    Target,
    common_target,
    comparison_parser,
    comparison_report,
    compiled_loss,
    plot_learning_curves,
    save_figure,
    timed_iterations,
)
from torch import Tensor, nn

from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import CountedFunc, LearnedMidpoint

HIDDEN = 32


def load_digits(seed: int = 0, device: torch.device = CPU) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Standardised features ``[N, 64]`` and labels ``[N]`` on ``device``, split 75/25 into train
    and test."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    x, y = sk_load(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32, device=device)
    as_y = lambda a: torch.tensor(a, device=device)
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


class Field(nn.Module):
    """dz/dt = MLP(z): ``[B, 32] -> [B, 32]``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(HIDDEN, 64), nn.Tanh(), nn.Linear(64, HIDDEN))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z)


class Classifier(nn.Module):
    """``[B, 64] -> [B, 10]`` logits around an ODE block ``[B, 32] -> [B, 32]``."""

    def __init__(self, ode_block: nn.Module):
        super().__init__()
        self.encode = nn.Linear(64, HIDDEN)
        self.ode = ode_block
        self.decode = nn.Linear(HIDDEN, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.ode(torch.tanh(self.encode(x))))


def train(name: str, model: Classifier, data: tuple[Tensor, Tensor, Tensor, Tensor], iterations: int,
          batch_size: int, lr: float, eval_every: int, seed: int, progress: bool,
          compile_mode: str | None = None) -> Run:
    """Adam on the cross-entropy of random mini-batches; test loss: cross-entropy on the test set.
    ``compile_mode``: compile the batch loss (see ``compiled_loss``)."""
    x_train, y_train, x_test, y_test = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # the fastest Adam, for every run
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()

    def test_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(x_test), y_test))

    def batch_loss(x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(model(x), y)

    run = Run(name)
    batch_loss = compiled_loss(run, batch_loss, compile_mode, (x_train[:batch_size], y_train[:batch_size]),
                               x_train.device)
    for _ in timed_iterations(run, iterations, test_loss, eval_every=eval_every, progress=progress,
                              device=x_train.device):
        index = torch.randint(0, len(x_train), (batch_size,), generator=generator).to(x_train.device)
        optimizer.zero_grad()
        loss = batch_loss(x_train[index], y_train[index])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        run.metric = float((model(x_test).argmax(-1) == y_test).float().mean())
    run.metric_name = "test accuracy"
    return run


def compare(iterations: int, order: int, steps: int, baselines: list[str], rtol: float, atol: float,
            progress: bool = True, seed: int = 0, batch_size: int = 128, lr: float = 1e-2,
            compile_modes: tuple[str | None, ...] = (None,), device: torch.device = CPU,
            ) -> list[Run]:
    """A TL-NODE classifier (once per entry of ``compile_modes``: None is eager) and, per baseline
    method, the same model with a NeuralODE block; same initialisation and batches."""
    data = load_digits(seed, device)
    eval_every = max(1, min(20, iterations // 4))
    runs = []
    for mode in compile_modes:
        torch.manual_seed(seed)
        tl = Classifier(TLNODE(Field(), order=order, steps=steps, horizon=1.0,
                               remainder=LearnedMidpoint(HIDDEN, hidden=32))).to(device)
        runs.append(train(f"TL-NODE p={order} s={steps}", tl, data, iterations, batch_size, lr, eval_every, seed,
                          progress, mode))
        runs[-1].nfe_per_forward = tl.ode.nfe_per_forward()
    for method in baselines:
        torch.manual_seed(seed)
        field = CountedFunc(Field())
        model = Classifier(NeuralODE(field, (0.0, 1.0), method=method, rtol=rtol, atol=atol)).to(device)
        run = train(method, model, data, iterations, batch_size, lr, eval_every, seed, progress)
        field.nfe = 0
        with torch.no_grad():
            model(data[2])
        run.nfe_per_forward = field.nfe
        runs.append(run)
    return runs


def plot(path: Path, runs: list[Run], target: Target) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    plot_learning_curves(ax, runs, "test cross-entropy", target,
                         label=lambda run: f"{run.name} (acc {run.metric:.3f})")
    ax.set_title("digits: ODE-block classifier")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = comparison_parser(__doc__.splitlines()[0], iters=300, steps=1, rtol=1e-5, atol=1e-5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    iterations = 30 if args.quick else args.iters
    runs = compare(iterations, args.order, args.steps, args.baseline, args.rtol, args.atol, not args.no_progress,
                   compile_modes=(None, args.compile) if args.compile else (None,), device=torch.device(args.device))
    print(f"digits classification, {iterations} iterations of batch 128, rtol={args.rtol:g}, atol={args.atol:g}; "
          f"NFE per forward pass of the ODE block")
    target = common_target(runs)
    print(comparison_report(runs, target, reference=args.baseline[0]))
    path = plot(Path(args.out) / "digits_classification.png", runs, target)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
