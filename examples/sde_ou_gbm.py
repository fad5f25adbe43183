"""Neural SDEs: learn an Ornstein–Uhlenbeck process and a geometric Brownian motion from paths.

    OU    dx = θ (μ − x) dt + σ dW        θ = 1, μ = 0.5, σ = 0.5   (additive noise: Itô = Stratonovich)
    GBM   dx = r x dt + v x dW   (Itô)    r = 0.3, v = 0.5          (Stratonovich drift (r − v²/2) x)

Data: paths simulated with torchsde (the GBM in Itô form) from random initial states, observed at
11 times on [0, 1]. Model: ``odegrad.sde.NeuralSDE`` with MLP drift and diffusion, trained as a
Wong–Zakai ODE (dopri5, ``gradient="gq"``): each data path's start is replicated R times and the
data path is scored at every observation time against the model's R paths by the continuous ranked
probability score (a proper scoring rule, estimated without bias from samples). Being a
Wong–Zakai limit, the model learns the Stratonovich drift.

Afterwards the trained drift and diffusion go to torchsde (``model.sample``) and the marginal mean
and variance from a fixed start are compared with the exact ones. Printed: the time of one
training iteration (forward + backward, same model, same batch) for gq, interp, backsolve and
torchsde's own ``sdeint_adjoint`` (reversible Heun with step 1/path_steps), and direct backprop
for reference; the final marginal errors; what the path's kinks cost (NFE and error of NeuralSDE's
solve per piece vs one solve through all kinks, stepping across them or stopping with ``jump_t``).

    python examples/sde_ou_gbm.py            # a few minutes on 2 cores
    python examples/sde_ou_gbm.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchsde
from _harness import save_figure
from torch import Tensor, nn

import odegrad
from odegrad.sde import NeuralSDE
from odegrad.solvers import CountedFunc

BACKENDS = ("gq", "interp", "backsolve", "direct")


@dataclass
class Process:
    """A true SDE: Stratonovich coefficients (what the model learns), how torchsde simulates it,
    the exact marginal mean and variance from x0, and where its states live."""

    name: str
    drift: Callable[[Tensor], Tensor]
    diffusion: Callable[[Tensor], Tensor]
    simulator: nn.Module
    mean: Callable[[float, Tensor], Tensor]
    variance: Callable[[float, Tensor], Tensor]
    starts: tuple[float, float]
    x_eval: float
    plot_range: tuple[float, float]


class _Simulator(nn.Module):
    noise_type = "diagonal"

    def __init__(self, sde_type: str, f: Callable[[Tensor], Tensor], g: Callable[[Tensor], Tensor]):
        super().__init__()
        self.sde_type = sde_type
        self._f, self._g = f, g

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self._f(y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self._g(y)


def ornstein_uhlenbeck(theta: float = 1.0, mu: float = 0.5, sigma: float = 0.5) -> Process:
    drift = lambda x: theta * (mu - x)
    diffusion = lambda x: sigma * torch.ones_like(x)
    return Process("OU", drift, diffusion, _Simulator("stratonovich", drift, diffusion),
                   mean=lambda x0, t: mu + (x0 - mu) * torch.exp(-theta * t),
                   variance=lambda x0, t: sigma ** 2 / (2 * theta) * (1 - torch.exp(-2 * theta * t)),
                   starts=(-1.0, 2.0), x_eval=1.5, plot_range=(-2.5, 3.5))


def geometric_brownian_motion(r: float = 0.3, v: float = 0.5) -> Process:
    return Process("GBM", lambda x: (r - v ** 2 / 2) * x, lambda x: v * x,
                   _Simulator("ito", lambda x: r * x, lambda x: v * x),
                   mean=lambda x0, t: x0 * torch.exp(r * t),
                   variance=lambda x0, t: x0 ** 2 * torch.exp(2 * r * t) * (torch.exp(v ** 2 * t) - 1),
                   starts=(0.5, 2.0), x_eval=1.0, plot_range=(0.05, 3.0))


class Coefficient(nn.Module):
    """``net(x)`` (softplus of it for a diffusion): ``[batch, 1] -> [batch, 1]``, time-independent."""

    def __init__(self, hidden: int, positive: bool):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))
        self.positive = positive

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        out = self.net(x)
        return nn.functional.softplus(out) if self.positive else out


def simulate(process: Process, paths: int, t: Tensor, seed: int) -> Tensor:
    """Data paths ``[len(t), paths, 1]`` from starts uniform on ``process.starts``."""
    generator = torch.Generator().manual_seed(seed)
    low, high = process.starts
    x0 = low + (high - low) * torch.rand(paths, 1, generator=generator)
    bm = torchsde.BrownianInterval(t0=float(t[0]), t1=float(t[-1]), size=(paths, 1), entropy=seed, dt=1e-3)
    method = "milstein" if process.simulator.sde_type == "ito" else "midpoint"
    with torch.no_grad():
        return torchsde.sdeint(process.simulator, x0, t, bm=bm, method=method, dt=1e-3)


def crps(paths: Tensor, data: Tensor) -> Tensor:
    """Mean continuous ranked probability score of ``data [T, B, 1]`` under the empirical law of
    ``paths [T, R·B, 1]`` (row r·B + b replicates data path b), times after the first. A proper
    scoring rule with an unbiased sample estimate: E|Y − x| − ½ E|Y − Y'|."""
    replicas = paths[1:].view(len(paths) - 1, -1, *data.shape[1:])
    count = replicas.shape[1]
    spread = (replicas.unsqueeze(1) - replicas.unsqueeze(2)).abs().sum((1, 2)) / (count * (count - 1))
    return ((replicas - data[1:].unsqueeze(1)).abs().mean(1) - 0.5 * spread).mean()


def wong_zakai_loss(model: NeuralSDE, batch: Tensor, t: Tensor, replicas: int, gradient: str,
                    generator: torch.Generator, rtol: float, atol: float) -> Tensor:
    paths = model(batch[0].repeat(replicas, 1), t, gradient=gradient, rtol=rtol, atol=atol, generator=generator)
    return crps(paths, batch)


def torchsde_loss(model: NeuralSDE, batch: Tensor, t: Tensor, replicas: int, seed: int) -> Tensor:
    starts = batch[0].repeat(replicas, 1)
    dt = 1 / model.path_steps
    bm = torchsde.BrownianInterval(t0=float(t[0]), t1=float(t[-1]), size=tuple(starts.shape), entropy=seed, dt=dt)
    paths = torchsde.sdeint_adjoint(model.to_torchsde(), starts, t, bm=bm, method="reversible_heun",
                                    adjoint_method="adjoint_reversible_heun", dt=dt)
    return crps(paths, batch)


def train(model: NeuralSDE, data: Tensor, t: Tensor, args: argparse.Namespace) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.1 ** (1 / args.iterations))  # to lr / 10
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    for _ in range(args.iterations):
        index = torch.randint(data.shape[1], (args.batch,), generator=generator)
        loss = wong_zakai_loss(model, data[:, index], t, args.replicas, "gq", generator, args.rtol, args.atol)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def timings(model: NeuralSDE, batch: Tensor, t: Tensor, args: argparse.Namespace) -> dict[str, float]:
    """Seconds of one forward + backward per gradient method: the best of ``args.repeats`` rounds,
    each round timing every method once (interleaved, so a busy spell of the machine hits all)."""
    steps: dict[str, Callable[[], Tensor]] = {
        gradient: (lambda gradient=gradient: wong_zakai_loss(
            model, batch, t, args.replicas, gradient, torch.Generator().manual_seed(args.seed), args.rtol, args.atol))
        for gradient in BACKENDS}
    steps["torchsde sdeint_adjoint"] = lambda: torchsde_loss(model, batch, t, args.replicas, args.seed)
    best = dict.fromkeys(steps, math.inf)
    for _ in range(args.repeats):
        for name, step in steps.items():
            model.zero_grad()
            start = time.perf_counter()
            step().backward()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def marginal_errors(process: Process, model: NeuralSDE, t: Tensor, samples: int, seed: int) -> dict[str, Tensor]:
    """Exact and sampled (torchsde, midpoint) marginal mean and variance ``[len(t)]`` from ``x_eval``,
    and the first sampled paths ``[len(t), 20]`` for the plot."""
    x0 = torch.full((1, 1), process.x_eval)
    with torch.no_grad():
        paths = model.sample(x0, t, n=samples, dt=1e-2, generator=torch.Generator().manual_seed(seed))[:, :, 0, 0]
    return {"mean": paths.mean(1), "variance": paths.var(1), "paths": paths[:, :20],
            "true mean": process.mean(process.x_eval, t), "true variance": process.variance(process.x_eval, t)}


class _AcrossKinks(nn.Module):
    """The Wong–Zakai field with the slope looked up at each evaluation (right-continuous: at a
    kink, the next piece's slope), for one solve through all kinks."""

    def __init__(self, model: NeuralSDE, kinks: Tensor, increments: Tensor):
        super().__init__()
        self.model = model
        self.kinks = kinks
        self.slopes = increments / (kinks[1:] - kinks[:-1]).view(-1, 1, 1).to(increments.dtype)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        piece = (torch.searchsorted(self.kinks, t.reshape(1), right=True) - 1).clamp(0, len(self.slopes) - 1)
        drift, diffusion = self.model.coefficients(t, x)
        return drift + diffusion * self.slopes[piece[0]]


def kink_cost(model: NeuralSDE, x0: Tensor, t: Tensor, seed: int) -> list[tuple[str, int, float]]:
    """(solve, NFE, max error vs a tight piecewise solve) at rtol = 1e-6, atol = 1e-7, one path:
    NeuralSDE's solve per piece, and one solve through all kinks, with and without ``jump_t``."""
    counted = NeuralSDE(CountedFunc(model.drift), model.diffusion, path_steps=model.path_steps)
    path = lambda: torch.Generator().manual_seed(seed)
    kinks = counted.path_times(t)
    field = _AcrossKinks(counted, kinks, counted.brownian_increments(kinks, x0, path()))
    solves = {
        "NeuralSDE: one solve per piece": lambda: counted(x0, t, gradient="direct", rtol=1e-6, atol=1e-7,
                                                           generator=path()),
        "one solve, steps across kinks": lambda: odegrad.odeint(field, x0, t, rtol=1e-6, atol=1e-7),
        "one solve, options={'jump_t': kinks}": lambda: odegrad.odeint(field, x0, t, rtol=1e-6, atol=1e-7,
                                                                      options={"jump_t": kinks[1:-1]}),
    }
    rows = []
    with torch.no_grad():
        reference = counted(x0, t, gradient="direct", rtol=1e-10, atol=1e-11, generator=path())
        for name, solve in solves.items():
            counted.drift.nfe = 0
            ys = solve()
            rows.append((name, counted.drift.nfe, float((ys - reference).abs().max())))
    return rows


def plot(results: list[tuple[Process, NeuralSDE, dict[str, Tensor]]], t_plot: Tensor, out: Path) -> Path:
    import matplotlib.pyplot as plt  # after _harness chose the Agg backend

    fig, axes = plt.subplots(len(results), 4, figsize=(17, 3.6 * len(results)))
    for row, (process, model, marginals) in zip(axes, results):
        low, high = process.starts
        xs = torch.linspace(*process.plot_range, 200).view(-1, 1)
        with torch.no_grad():
            learned_drift, learned_diffusion = model.coefficients(torch.tensor(0.0), xs)
        for ax, true, learned, what in ((row[0], process.drift(xs), learned_drift, "drift (Stratonovich)"),
                                        (row[1], process.diffusion(xs), learned_diffusion, "diffusion")):
            ax.plot(xs[:, 0], true[:, 0], "k-", label="true")
            ax.plot(xs[:, 0], learned[:, 0], "C1--", label="learned")
            ax.axvspan(low, high, color="0.9", label="data starts")
            ax.set(title=f"{process.name}: {what}", xlabel="x")
            ax.legend()
        ax = row[2]
        for key, style in (("mean", "C0"), ("variance", "C2")):
            ax.plot(t_plot, marginals[f"true {key}"], style + "-", label=f"true {key}")
            ax.plot(t_plot, marginals[key], style + "--", label=f"learned {key} (torchsde)")
        ax.set(title=f"{process.name}: marginals from x0 = {process.x_eval}", xlabel="t")
        ax.legend()
        ax = row[3]
        ax.plot(t_plot, marginals["paths"], color="C1", lw=0.5, alpha=0.5)
        spread = 2 * marginals["variance"].sqrt()
        ax.fill_between(t_plot, marginals["mean"] - spread, marginals["mean"] + spread, color="C1", alpha=0.2,
                        label="learned mean ± 2 sd")
        true_spread = 2 * marginals["true variance"].sqrt()
        for sign in (-1, 1):
            ax.plot(t_plot, marginals["true mean"] + sign * true_spread, "k--", lw=1,
                    label="true mean ± 2 sd" if sign > 0 else None)
        ax.set(title=f"{process.name}: 20 learned sample paths (torchsde)", xlabel="t")
        ax.legend()
    return save_figure(fig, out / "sde_ou_gbm.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--paths", type=int, default=512, help="simulated data paths per process")
    parser.add_argument("--batch", type=int, default=32, help="data paths per iteration")
    parser.add_argument("--replicas", type=int, default=16, help="model paths per data path")
    parser.add_argument("--path-steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds over the backends (best taken)")
    parser.add_argument("--samples", type=int, default=4000, help="torchsde paths for the marginals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (on a small shared machine more threads measure contention)")
    parser.add_argument("--out", type=Path, default=Path("examples_out"))
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.paths, args.batch, args.replicas = 3, 32, 4, 4
        args.path_steps, args.hidden, args.repeats, args.samples = 10, 8, 1, 100
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t = torch.linspace(0, 1, 11)
    t_plot = torch.linspace(0, 1, 41)
    results, table = [], {}
    for process in (ornstein_uhlenbeck(), geometric_brownian_motion()):
        data = simulate(process, args.paths, t, args.seed)
        model = NeuralSDE(Coefficient(args.hidden, positive=False), Coefficient(args.hidden, positive=True),
                          path_steps=args.path_steps)
        start = time.perf_counter()
        losses = train(model, data, t, args)
        print(f"{process.name}: {args.iterations} iterations in {time.perf_counter() - start:.1f} s, "
              f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        table[process.name] = timings(model, data[:, :args.batch], t, args)
        marginals = marginal_errors(process, model, t_plot, args.samples, args.seed)
        for key in ("mean", "variance"):
            error = (marginals[key] - marginals[f"true {key}"]).abs().max()
            print(f"{process.name}: max |error| of the marginal {key} over t in [0, 1]: {float(error):.4f} "
                  f"(true values up to {float(marginals[f'true {key}'].abs().max()):.3f})")
        results.append((process, model, marginals))
    names = list(table)
    print(f"\nTraining time per iteration (forward + backward, batch {args.batch} x {args.replicas} paths, "
          f"path_steps {args.path_steps}, dopri5 rtol {args.rtol:g}):\n")
    print("| gradient | " + " | ".join(f"{name} ms/iter" for name in names) + " | vs gq |")
    print("|---|" + "---:|" * (len(names) + 1))
    for backend in table[names[0]]:
        ratio = sum(table[n][backend] / table[n]["gq"] for n in names) / len(names)
        print(f"| {backend} | " + " | ".join(f"{1e3 * table[n][backend]:.0f}" for n in names) + f" | {ratio:.2f}x |")
    print(f"\nWhat the kinks cost ({results[0][0].name} model, dopri5 rtol 1e-6, one Brownian path):\n")
    print("| solve | NFE (drift) | max error |")
    print("|---|---:|---:|")
    process, model, _ = results[0]
    x0 = torch.linspace(*process.starts, args.batch).view(-1, 1)
    for name, nfe, error in kink_cost(model, x0, t, args.seed):
        print(f"| {name} | {nfe} | {error:.1e} |")
    print(f"\nsaved {plot(results, t_plot, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
