"""Per-iteration overhead: the small adaptive model and the compiled fixed-cost path.

1. w50 spiral training iteration (``bench_spiral.py``'s task: MLP 2-50-2 tanh, batch 20 x 10
   points, dopri5 rtol 1e-7 / atol 1e-9, direct backprop), odegrad vs torchdiffeq, timed
   alternately in one process; then jitted diffrax on the same task from
   ``bench_overhead_diffrax.py`` in a fresh process of ``--diffrax-python`` (JAX is not an odegrad
   dependency: the row is skipped, with the reason, where that interpreter has no diffrax); and the
   same iteration with ``gradient="backsolve"``, ``"gq"`` and ``"interp"``: eager (segment by
   segment), compiled (one traced backward sweep; with inductor's default Python wrapper and with
   ``options={"cpp_wrapper": True}``) and torchdiffeq's ``odeint_adjoint``. (``direct`` cannot use
   the C++ wrapper: inductor 2.13 has none for the stacked outputs of ``while_loop``'s autograd.)
2. ``NeuralODE`` rk4, h = 0.1 on [0, 1], MLP 32-256-256-32 tanh, batch 2048: a training step
   (forward, MSE loss, backward, SGD update) eager vs ``torch.compile(model, fullgraph=True)``
   vs, on CUDA, ``mode="reduce-overhead"`` (CUDA graphs), with torchdiffeq's rk4 as reference;
   compile time and the number of compiled graphs (1 each: no recompilation) are printed.
3. One RK stage combination ``y0 + h·Σ a_j k_j`` (5 stages, the spiral's state size), forward +
   backward: eager adds vs a ``torch.compile``d function.

    python benchmarks/bench_overhead.py                  # CPU
    python benchmarks/bench_overhead.py --device cuda    # adds the CUDA-graph row
    python benchmarks/bench_overhead.py --diffrax-python /tmp/jaxvenv/bin/python
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchdiffeq
from bench_spiral import SpiralField, batches, pretrain, spiral_data
from common import paired_median_times, ratio

import odegrad
from odegrad.models import NeuralODE
from odegrad.solvers._rk import _add_scaled


def _timer(device: torch.device) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """``fn`` followed by a device synchronisation, so wall times include the queued kernels."""
    def timed(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run
    return timed


def spiral_overhead(device: torch.device, repeats: int, pretrain_iterations: int) -> None:
    torch.manual_seed(0)
    t, ys = spiral_data()
    data = [tuple(x.to(device) for x in batch) for batch in batches(t, ys, count=32)]
    torch.manual_seed(1)
    func = SpiralField(50, 2).to(device)
    pretrain(func, data, pretrain_iterations, 1e-5, 1e-7)
    cursor = iter(range(10 ** 9))

    def train(odeint: Callable, **settings) -> Callable[[], None]:
        def step() -> None:
            y0, t, target = data[next(cursor) % len(data)]
            func.zero_grad()
            (odeint(func, y0, t, rtol=1e-7, atol=1e-9, **settings) - target).abs().mean().backward()
        return step

    def torchdiffeq_dopri5(func, y0, t, **tolerances):
        return torchdiffeq.odeint(func, y0, t, method="dopri5", **tolerances)

    def torchdiffeq_adjoint(func, y0, t, **tolerances):
        return torchdiffeq.odeint_adjoint(func, y0, t, method="dopri5", **tolerances)

    nfe = [odegrad.solve(func, y0, t, rtol=1e-7, atol=1e-9).stats.nfe_forward for y0, t, _ in data]

    def field_only() -> None:
        """The eager floor: as many evaluations of the field as odegrad's forward makes on the
        batch, chained by one add each, and their backward pass."""
        i = next(cursor) % len(data)
        y, _, target = data[i]
        func.zero_grad()
        time = torch.zeros((), device=device)
        for _ in range(nfe[i]):
            y = y + 0.01 * func(time, y)
        (y - target[-1]).abs().mean().backward()

    timed = _timer(device)
    compiled_odeint, compile_seconds = _compiled_adaptive(func, data, timed, "direct")
    ours, ref, floor, compiled = paired_median_times(
        [timed(train(odegrad.odeint)), timed(train(torchdiffeq_dopri5)), timed(field_only),
         timed(train(compiled_odeint))], repeats)
    steps = odegrad.solve(func, *data[0][:2], rtol=1e-7, atol=1e-9).stats
    print(f"| odegrad direct | {ours * 1e3:.2f} ms | {ref * 1e3:.2f} ms | "
          f"{ratio(ours, ref)} | {steps.steps_accepted} steps, {steps.nfe_forward} NFE forward on the first "
          f"batch ({pretrain_iterations} pretraining iterations) |")
    print(f"| odegrad direct, `torch.compile(fullgraph=True)` (traced driver) | {compiled * 1e3:.2f} ms | "
          f"{ref * 1e3:.2f} ms | {ratio(compiled, ref)} | {ratio(compiled, ours)} of odegrad eager; compiling "
          f"took {compile_seconds:.1f} s, {_graphs()} graph(s) |")
    print(f"| the field alone (odegrad's forward NFE, chained; forward + backward) | {floor * 1e3:.2f} ms | | | "
          f"odegrad direct is {ratio(ours, floor)} of it |")
    for gradient in ("backsolve", "gq", "interp"):
        compiled_adjoint, compile_seconds = _compiled_adaptive(func, data, timed, gradient)
        wrapped_adjoint, wrapped_seconds = _compiled_adaptive(func, data, timed, gradient, {"cpp_wrapper": True})
        eager, ref, compiled, wrapped = paired_median_times(
            [timed(train(odegrad.odeint, gradient=gradient)), timed(train(torchdiffeq_adjoint)),
             timed(train(compiled_adjoint)), timed(train(wrapped_adjoint))], repeats)
        print(f"| odegrad {gradient} (eager: segment by segment) | {eager * 1e3:.2f} ms | {ref * 1e3:.2f} ms "
              f"(torchdiffeq `odeint_adjoint`) | {ratio(eager, ref)} | |")
        print(f"| odegrad {gradient}, `torch.compile(fullgraph=True)` (one traced backward sweep) | "
              f"{compiled * 1e3:.2f} ms | {ref * 1e3:.2f} ms | {ratio(compiled, ref)} | {ratio(compiled, eager)} of "
              f"odegrad eager {gradient}; compiling took {compile_seconds:.1f} s |")
        print(f"| odegrad {gradient}, compiled with `options={{'cpp_wrapper': True}}` | {wrapped * 1e3:.2f} ms | "
              f"{ref * 1e3:.2f} ms | {ratio(wrapped, ref)} | {ratio(wrapped, compiled)} of the default compile; "
              f"compiling took {wrapped_seconds:.1f} s |")


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _compiled_adaptive(func: torch.nn.Module, data: list, timed: Callable, gradient: str,
                       options: dict | None = None) -> tuple[Callable, float]:
    """``odegrad.odeint`` (dopri5, ``gradient``) under ``torch.compile(fullgraph=True)`` (inductor,
    with the inductor ``options``): the traced driver's while loops, forward and backward; compiled
    here on the first batch, so the timed runs see no compilation. Returns the compiled odeint and
    the compile time."""
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, options=options)
    def compiled(func, y0, t, rtol, atol):
        return odegrad.odeint(func, y0, t, rtol=rtol, atol=atol, gradient=gradient)

    y0, t, target = data[0]
    start = time.perf_counter()
    timed(lambda: (compiled(func, y0, t, 1e-7, 1e-9) - target).abs().mean().backward())()
    return compiled, time.perf_counter() - start


def diffrax_overhead(python: str, repeats: int, pretrain_iterations: int) -> None:
    """The jitted diffrax rows (backprop, BacksolveAdjoint), from a fresh process (or why they are missing)."""
    script = Path(__file__).with_name("bench_overhead_diffrax.py")
    result = subprocess.run([python, str(script), "--repeats", str(repeats * 5), "--pretrain",
                             str(pretrain_iterations)], capture_output=True, text=True, timeout=600)
    lines = (result.stdout if result.returncode == 0 else result.stderr).strip().splitlines()
    rows = [line for line in lines if line.startswith("| jitted diffrax")]
    skipped = f"(diffrax skipped: {lines[-1:] or result.returncode})"
    print("\n".join(rows) if result.returncode == 0 and rows else skipped)


def _mlp(width: int, hidden: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                               torch.nn.Tanh(), torch.nn.Linear(hidden, width))


class _Field(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class _Torchdiffeq(torch.nn.Module):
    def __init__(self, field: torch.nn.Module, t: torch.Tensor):
        super().__init__()
        self.field = field
        self.register_buffer("t", t)

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        return torchdiffeq.odeint(self.field, y0, self.t, method="rk4", options={"step_size": 0.1})[-1]


def compiled_fixed_step(device: torch.device, repeats: int, batch: int, modes: list[str]) -> None:
    torch.manual_seed(0)
    field = _Field(_mlp(32, 256)).to(device)
    model = NeuralODE(field, t=(0.0, 1.0), method="rk4", options={"step_size": 0.1})
    reference = _Torchdiffeq(field, torch.tensor([0.0, 1.0], device=device))
    x = torch.randn(batch, 32, device=device)
    target = torch.randn(batch, 32, device=device)
    optimizer = torch.optim.SGD(field.parameters(), lr=1e-4)

    def step(run: Callable, mark: bool = False) -> Callable[[], None]:
        def train() -> None:
            if mark:
                torch.compiler.cudagraph_mark_step_begin()
            optimizer.zero_grad(set_to_none=False)
            torch.nn.functional.mse_loss(run(x), target).backward()
            optimizer.step()
        return train

    timed = _timer(device)
    runs = {"torchdiffeq eager": timed(step(reference)), "odegrad eager": timed(step(model))}
    notes = []
    for mode in modes:  # no torch._dynamo.reset() between modes: it would drop the earlier compilations
        compiled = torch.compile(model, fullgraph=True, mode=None if mode == "default" else mode)
        run = timed(step(compiled, mark=mode == "reduce-overhead"))
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        start = time.perf_counter()
        run()
        run()
        seconds = time.perf_counter() - start
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
        notes.append(f"{mode}: first two steps (compiling) {seconds:.1f} s, {graphs} graph(s) compiled")
        runs[f"odegrad compile {mode}"] = run
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    times = dict(zip(runs, paired_median_times(list(runs.values()), repeats)))
    recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    notes.append(f"graphs compiled while timing: {recompiled}")
    eager = times["odegrad eager"]
    for name, seconds in times.items():
        print(f"| NeuralODE rk4 h=0.1, batch {batch}, train step | {name} | {seconds * 1e3:.2f} ms | "
              f"{ratio(seconds, eager)} of odegrad eager |")
    print(f"<!-- {'; '.join(notes)} -->")


def stage_combination(device: torch.device, repeats: int) -> None:
    y0 = torch.randn(20, 2, device=device, requires_grad=True)
    stages = [torch.randn(20, 2, device=device, requires_grad=True) for _ in range(5)]
    row, h = (0.1, 0.2, 0.3, 0.4, 0.5), 0.05

    @torch.compile(fullgraph=True, dynamic=False)
    def fused(y0, scale, k0, k1, k2, k3, k4):
        return y0 + scale[0] * k0 + scale[1] * k1 + scale[2] * k2 + scale[3] * k3 + scale[4] * k4

    scale = torch.tensor(row, device=device) * h
    timed = _timer(device)
    eager, compiled = paired_median_times([
        timed(lambda: _add_scaled(y0, h, row, stages).sum().backward()),
        timed(lambda: fused(y0, scale, *stages).sum().backward())], repeats)
    print(f"| one stage combination (5 stages, [20, 2]), forward + backward | eager {eager * 1e6:.1f} us "
          f"| torch.compile {compiled * 1e6:.1f} us | {ratio(compiled, eager)} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--pretrain", type=int, default=300, help="spiral training iterations before measuring")
    parser.add_argument("--batch", type=int, default=2048, help="NeuralODE rk4 batch size")
    parser.add_argument("--compile-modes", default=None,
                        help="comma-separated torch.compile modes (default: 'default', plus 'reduce-overhead' "
                             "on CUDA; '' skips compiling)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="spiral,diffrax,compile,combination")
    parser.add_argument("--diffrax-python", default=sys.executable,
                        help="interpreter with jax, diffrax, equinox and optax for the diffrax row")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    modes = args.compile_modes
    if modes is None:
        modes = "default,reduce-overhead" if device.type == "cuda" else "default"
    parts = args.parts.split(",")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"overhead benchmark on {name}, torch {torch.__version__}, float32, median of {args.repeats} "
          f"alternating runs")
    if "spiral" in parts:
        print("| w50 spiral, dopri5, train iteration | time | torchdiffeq | ratio | steps |\n|---|---|---|---|---|")
        spiral_overhead(device, args.repeats, args.pretrain)
    if "diffrax" in parts:
        diffrax_overhead(args.diffrax_python, args.repeats, args.pretrain)
    if "compile" in parts:
        print("| problem | run | time | ratio |\n|---|---|---|---|")
        compiled_fixed_step(device, args.repeats, args.batch, [m for m in modes.split(",") if m])
    if "combination" in parts:
        print("| operation | eager | compiled | ratio |\n|---|---|---|---|")
        stage_combination(device, args.repeats * 10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
