"""torchdiffeq's spiral demo, odegrad vs torchdiffeq in one process.

True field y' = (y³)A, A = [[-0.1, 2], [-2, -0.1]], y0 = [2, 0], t ∈ [0, 25] at 1000 points;
training batches of 20 random 10-point segments; models: MLP 2-50-2 tanh ("mlp50", torchdiffeq's
demo) and a 3-layer width-512 MLP ("mlp512"). For direct backprop and the adjoint
(odegrad backsolve vs torchdiffeq odeint_adjoint) it prints forward time, time per training
iteration (forward + backward), NFE and peak memory as odegrad/torchdiffeq ratios.

    python benchmarks/bench_spiral.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_spiral.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torchdiffeq
from common import paired_median_times, peak_memory_mib, ratio, saved_tensor_mib

import odegrad
from odegrad.solvers import CountedFunc

TRUE_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])


def spiral_data(n_points: int = 1000, t_end: float = 25.0):
    t = torch.linspace(0.0, t_end, n_points)
    y0 = torch.tensor([[2.0, 0.0]])
    with torch.no_grad():
        ys = torchdiffeq.odeint(lambda t, y: (y ** 3) @ TRUE_A, y0, t, method="dopri5")
    return t, ys


def batches(t, ys, count: int, batch_size: int = 20, length: int = 10, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        starts = torch.randint(0, len(t) - length, (batch_size,), generator=generator)
        out.append((ys[starts], t[:length], torch.stack([ys[starts + i] for i in range(length)])))
    return out


class SpiralField(torch.nn.Module):
    def __init__(self, width: int, layers: int):
        super().__init__()
        dims = [2] + [width] * (layers - 1) + [2]
        modules = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            modules.append(torch.nn.Linear(a, b))
            if i < len(dims) - 2:
                modules.append(torch.nn.Tanh())
        self.net = torch.nn.Sequential(*modules)
        for m in self.net:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=0.1)
                torch.nn.init.zeros_(m.bias)

    def forward(self, t, y):
        return self.net(y ** 3)


MODELS = {"mlp50": (50, 2), "mlp512": (512, 3)}


def make_runner(lib: str, mode: str, func: CountedFunc, rtol: float, atol: float):
    """A function (y0, t) -> ys for one library and gradient mode."""
    if lib == "odegrad":
        gradient = "direct" if mode == "direct" else "backsolve"
        return lambda y0, t: odegrad.odeint(func, y0, t, rtol=rtol, atol=atol, gradient=gradient)
    solve = torchdiffeq.odeint if mode == "direct" else torchdiffeq.odeint_adjoint
    return lambda y0, t: solve(func, y0, t, rtol=rtol, atol=atol, method="dopri5")


def measure(mode, func, data, repeats, rtol, atol):
    """Timings, NFE and peak memory for odegrad and torchdiffeq (measured alternately)."""
    results = {}
    jobs = {}
    for lib in ("odegrad", "torchdiffeq"):
        run = make_runner(lib, mode, func, rtol, atol)
        cursor = iter(range(10 ** 9))

        def forward(run=run, cursor=cursor):
            y0, t, _ = data[next(cursor) % len(data)]
            with torch.no_grad():
                run(y0, t)

        def train(run=run, cursor=cursor):
            y0, t, target = data[next(cursor) % len(data)]
            func.zero_grad()
            (run(y0, t) - target).abs().mean().backward()

        jobs[lib] = (run, forward, train)
    forward_times = paired_median_times([jobs[lib][1] for lib in jobs], repeats)
    train_times = paired_median_times([jobs[lib][2] for lib in jobs], repeats)
    for i, (lib, (run, _, train)) in enumerate(jobs.items()):
        func.nfe = 0
        y0, t, target = data[0]
        ys = run(y0, t)
        nfe_forward = func.nfe
        (ys - target).abs().mean().backward()
        results[lib] = dict(forward=forward_times[i], train=train_times[i], nfe_f=nfe_forward,
                            nfe_b=func.nfe - nfe_forward, peak=peak_memory_mib(train),
                            saved=saved_tensor_mib(partial(run, y0, t)))
    return results["odegrad"], results["torchdiffeq"]


def pretrain(func: CountedFunc, data, iterations: int, rtol: float, atol: float) -> float:
    """Fit the field for a while (Adam, as torchdiffeq's demo) so timings see learned, non-trivial dynamics."""
    optimizer = torch.optim.Adam(func.parameters(), lr=1e-3)
    loss = torch.tensor(float("nan"))
    for i in range(iterations):
        y0, t, target = data[i % len(data)]
        optimizer.zero_grad()
        loss = (odegrad.odeint(func, y0, t, rtol=rtol, atol=atol) - target).abs().mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def nfe(result: dict) -> int:
    return result["nfe_f"] + result["nfe_b"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp50,mlp512")
    parser.add_argument("--modes", default="direct,adjoint")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rtol", type=float, default=1e-7)
    parser.add_argument("--atol", type=float, default=1e-9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain", type=int, default=300, help="training iterations before measuring")
    parser.add_argument("--quick", action="store_true", help="few repeats, small model only")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.repeats, args.pretrain = "mlp50", 3, 20
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t, ys = spiral_data()
    data = batches(t, ys, count=32)
    print(f"spiral benchmark: dopri5 rtol={args.rtol} atol={args.atol}, batch 20 x 10 points, float32, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print("| model | gradient | forward time | train iter time | train time per NFE | NFE fwd (ours/tdq) "
          "| NFE bwd (ours/tdq) | memory kept for backward (ours/tdq MiB) | peak RSS rise (ours/tdq MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        width, layers = MODELS[model_name]
        torch.manual_seed(1)
        func = CountedFunc(SpiralField(width, layers))
        loss = pretrain(func, data, args.pretrain, 1e-5, 1e-7)
        print(f"<!-- {model_name}: {args.pretrain} pretraining iterations, last loss {loss:.4f} -->")
        for mode in args.modes.split(","):
            ours, ref = measure(mode, func, data, args.repeats, args.rtol, args.atol)
            backend = "direct" if mode == "direct" else "backsolve vs odeint_adjoint"
            print(f"| {model_name} | {backend} | {ratio(ours['forward'], ref['forward'])} "
                  f"({ours['forward'] * 1e3:.1f} / {ref['forward'] * 1e3:.1f} ms) "
                  f"| {ratio(ours['train'], ref['train'])} ({ours['train'] * 1e3:.1f} / {ref['train'] * 1e3:.1f} ms) "
                  f"| {ratio(ours['train'] / nfe(ours), ref['train'] / nfe(ref))} "
                  f"| {ours['nfe_f']}/{ref['nfe_f']} | {ours['nfe_b']}/{ref['nfe_b']} "
                  f"| {ours['saved']:.2f}/{ref['saved']:.2f} | {ours['peak']:.1f}/{ref['peak']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
