"""2-D density estimation with a continuous normalizing flow (exact trace) on eight Gaussians.

State [z, Δ] ∈ R³ flows from a data point (t = 0) to the base N(0, I) (t = 1):

    dz/dt = f(t, z),   dΔ/dt = tr(∂f/∂z),   log p(x) = log N(z(1); 0, I) + Δ(1)

with f(t, z) = W3 tanh(W2 tanh(W1 [z, t] + b1) + b2) + b3. For this MLP the trace is exact in
closed form, tr(W3 D2 W2 D1 W1z) = Σ_ij D2_i D1_j (W2)_ij (W1z W3)_ji with D = diag(1 − tanh²),
which uses only ops with a Taylor rule (no autograd inside f), so the TL-NODE runs it in Taylor
mode. TL-NODE (order 1, four steps, learned midpoint) vs dopri5 (direct backprop): the common
target test negative log-likelihood (the worst of the runs' best + 0.05 nats), each model's
training time to reach it, NFE per forward pass, final test NLL; saves a density plot. Test NLLs
are those of the learned continuous flow (each field solved by dopri5): with a single Taylor step
(``--steps 1``) the fixed-step model learns to inflate its own log-det estimate while the flow's
true likelihood gets worse, so too few steps show up as a bad test NLL here.

    python examples/density_cnf.py            # ~1-3 minutes on 2 cores
    python examples/density_cnf.py --quick    # smoke run
"""

from __future__ import annotations

import math
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


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """``[n, 2]`` samples from 8 Gaussians (std 0.35) on a circle of radius 2."""
    angles = torch.randint(0, 8, (n,), generator=generator).float() * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return centers + 0.35 * torch.randn(n, 2, generator=generator)


class TraceField(nn.Module):
    """CNF dynamics with exact trace: ``[B, 3] -> [B, 3]`` (last column: d log-det / dt)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.l1 = nn.Linear(3, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 2)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        z = state[..., :2]
        time = t * torch.ones_like(z[..., :1])
        h1 = torch.tanh(self.l1(torch.cat([z, time], dim=-1)))
        h2 = torch.tanh(self.l2(h1))
        dz = self.l3(h2)
        d1, d2 = 1 - h1 * h1, 1 - h2 * h2
        coupling = self.l2.weight * (self.l1.weight[:, :2] @ self.l3.weight).transpose(0, 1)  # [H2, H1]
        # torch.matmul, not `d2 @ coupling`: under torch.compile, dynamo evaluates a Taylor-mode `Jet @ Tensor`
        # with its operands swapped (torch 2.13 has no reflected matmul for __torch_function__ objects)
        trace = (torch.matmul(d2, coupling) * d1).sum(-1, keepdim=True)
        return torch.cat([dz, trace], dim=-1)


class Flow(nn.Module):
    """log p(x) for ``x: [B, 2] -> [B]`` through a flow block ``[B, 3] -> [B, 3]``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1))
        z, delta = out[..., :2], out[..., 2]
        return -0.5 * (z * z).sum(-1) - math.log(2 * math.pi) + delta


def train(name: str, flow: Flow, exact: Flow, iterations: int, batch_size: int, lr: float, eval_every: int,
          seed: int, progress: bool, compile_mode: str | None = None,
          device: torch.device = CPU) -> Run:
    """Train ``flow``; test NLL from ``exact`` (the same vector field solved by dopri5), i.e. the
    likelihood of the learned continuous flow, which a fixed-step model cannot inflate.
    ``compile_mode``: compile the batch loss (see ``compiled_loss``)."""
    generator = torch.Generator().manual_seed(seed)
    test = eight_gaussians(2000, torch.Generator().manual_seed(seed + 1)).to(device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr, fused=True)  # the fastest Adam, for every run

    def test_nll() -> float:
        with torch.no_grad():
            return float(-exact(test).mean())

    def batch_loss(x: Tensor) -> Tensor:
        return -flow(x).mean()

    run = Run(name)
    batch_loss = compiled_loss(run, batch_loss, compile_mode, (test[:batch_size],), device)
    for _ in timed_iterations(run, iterations, test_nll, eval_every=eval_every, progress=progress, device=device):
        optimizer.zero_grad()
        loss = batch_loss(eight_gaussians(batch_size, generator).to(device))
        loss.backward()
        optimizer.step()
    return run


def compare(iterations: int, order: int, steps: int, baselines: list[str], rtol: float, atol: float,
            progress: bool = True, seed: int = 0, batch_size: int = 256, lr: float = 5e-3,
            compile_modes: tuple[str | None, ...] = (None,), device: torch.device = CPU,
            ) -> tuple[list[Run], dict[str, Flow]]:
    """A TL-NODE flow (once per entry of ``compile_modes``: None is eager) and, per baseline
    method, the same flow with a NeuralODE block; same initialisation and batches."""
    eval_every = max(1, min(25, iterations // 4))
    runs, flows = [], {}
    for mode in compile_modes:
        torch.manual_seed(seed)
        tl = Flow(TLNODE(TraceField(), order=order, steps=steps, horizon=1.0,
                         remainder=LearnedMidpoint(3, hidden=32))).to(device)
        tl_exact = Flow(NeuralODE(tl.block.func, (0.0, 1.0), method="dopri5", rtol=rtol, atol=atol))
        runs.append(train(f"TL-NODE p={order} s={steps}", tl, tl_exact, iterations, batch_size, lr, eval_every,
                          seed, progress, mode, device))
        runs[-1].nfe_per_forward = tl.block.nfe_per_forward()
        flows[runs[-1].name] = tl_exact
    for method in baselines:
        torch.manual_seed(seed)
        field = CountedFunc(TraceField())
        flow = Flow(NeuralODE(field, (0.0, 1.0), method=method, rtol=rtol, atol=atol)).to(device)
        run = train(method, flow, flow, iterations, batch_size, lr, eval_every, seed, progress, device=device)
        field.nfe = 0
        with torch.no_grad():
            flow(eight_gaussians(256, torch.Generator().manual_seed(seed + 2)).to(device))
        run.nfe_per_forward = field.nfe
        runs.append(run)
        flows[method] = flow
    return runs, flows


def plot(path: Path, runs: list[Run], flows: dict[str, Flow], target: Target) -> Path:
    import matplotlib.pyplot as plt

    grid = torch.linspace(-3.5, 3.5, 70)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    fig, axes = plt.subplots(1, len(flows) + 2, figsize=(4 * (len(flows) + 2) + 1, 4))
    data = eight_gaussians(3000, torch.Generator().manual_seed(5))
    axes[0].hist2d(data[:, 0].numpy(), data[:, 1].numpy(), bins=70, range=[[-3.5, 3.5], [-3.5, 3.5]])
    axes[0].set_title("data")
    for ax, (name, flow) in zip(axes[1:], flows.items()):
        with torch.no_grad():
            density = flow(points.to(next(flow.parameters()).device)).exp().reshape(70, 70).cpu()
        ax.imshow(density.numpy(), origin="lower", extent=[-3.5, 3.5, -3.5, 3.5])
        ax.set_title(name)
    plot_learning_curves(axes[-1], runs, "test NLL", target, log=False)
    return save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = comparison_parser(__doc__.splitlines()[0], iters=300, steps=4, rtol=1e-5, atol=1e-5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    iterations = 30 if args.quick else args.iters
    runs, flows = compare(iterations, args.order, args.steps, args.baseline, args.rtol, args.atol,
                          not args.no_progress, compile_modes=(None, args.compile) if args.compile else (None,),
                          device=torch.device(args.device))
    print(f"2-D CNF on eight Gaussians, {iterations} iterations of batch 256, rtol={args.rtol:g}, "
          f"atol={args.atol:g}; NFE per forward pass")
    print("test NLL of every model: its vector field solved by dopri5 (the likelihood of the learned flow)")
    target = common_target(runs, relative=0.0, absolute=0.05)
    print(comparison_report(runs, target, reference=args.baseline[0]))
    path = plot(Path(args.out) / "density_cnf.png", runs, flows, target)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
