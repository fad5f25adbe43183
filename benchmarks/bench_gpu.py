"""Training-iteration time of odegrad's gradient backends vs torchdiffeq (and jitted diffrax, when
JAX is installed), on one device — the time rows of issue 19's table.

Problems (float32, autonomous MLP fields with PyTorch's default initialisation, random targets,
MSE over all output times, one Adam step with lr 1e-5 per iteration so the dynamics stay put):
  large    MLP 64-512-512-64 tanh, batch 4096, 10 outputs on [0, 1], dopri5 rtol 1e-5 atol 1e-7
  long-T   MLP 32-256-256-32 tanh, batch 2048, outputs [0, T/2, T] for T = 1 and T = 50,
           dopri5 rtol 1e-6 atol 1e-8 (the horizon sweep of the memory table)
Methods: torchdiffeq ``odeint`` (direct) and ``odeint_adjoint`` (the baseline of the ratio column),
odegrad ``direct``, ``backsolve``, ``gq``, ``interp``; diffrax ``RecursiveCheckpointAdjoint``
(direct) and ``BacksolveAdjoint`` with Dopri5 + PIDController at the same tolerances, jitted
value-and-grad + optax Adam, run in a fresh subprocess so JAX and PyTorch do not share the GPU's
allocator. Times are medians over ``--repeats`` iterations, methods alternating (CUDA-synchronised).
NFE: odegrad's counters (forward + backward) and the calls of the field for torchdiffeq.

Peak memory is measured by ``bench_memory.py`` (a fresh process per method); compiled fixed-cost
paths by ``bench_overhead.py`` and ``bench_tlnode.py``.

    python benchmarks/bench_gpu.py                  # CUDA when available, else CPU
    python benchmarks/bench_gpu.py --quick          # smoke run (small batches, numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq
from common import paired_median_times
from torch import Tensor, nn

import odegrad
from odegrad.solvers import CountedFunc

BACKENDS = ("direct", "backsolve", "gq", "interp")


@dataclass(frozen=True)
class Problem:
    """An MLP field ``dim-width-width-dim`` (tanh) on a batch of ``batch`` states, outputs at ``times``."""

    name: str
    dim: int
    width: int
    batch: int
    times: tuple[float, ...]
    rtol: float
    atol: float


def problems(quick: bool) -> list[Problem]:
    scale = 16 if quick else 1
    return [
        Problem("large", 64, 512, 4096 // scale, tuple(i / 9 for i in range(10)), 1e-5, 1e-7),
        Problem("long-T T=1", 32, 256, 2048 // scale, (0.0, 0.5, 1.0), 1e-6, 1e-8),
        Problem("long-T T=50", 32, 256, 2048 // scale, (0.0, 25.0, 50.0), 1e-6, 1e-8),
    ]


class Field(nn.Module):
    """``f(t, y) = MLP(y)``, ``dim-width-width-dim`` with tanh."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, dim))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


@dataclass
class Setup:
    field: CountedFunc
    y0: Tensor
    t: Tensor
    target: Tensor
    optimizer: torch.optim.Optimizer


def make_setup(problem: Problem, device: torch.device) -> Setup:
    torch.manual_seed(0)
    field = CountedFunc(Field(problem.dim, problem.width)).to(device)
    y0 = torch.randn(problem.batch, problem.dim, device=device)
    t = torch.tensor(problem.times, device=device)
    target = torch.randn(len(problem.times), problem.batch, problem.dim, device=device)
    return Setup(field, y0, t, target, torch.optim.Adam(field.parameters(), lr=1e-5))


def iteration(setup: Setup, solve: Callable[[CountedFunc, Tensor, Tensor], Tensor]) -> Callable[[], None]:
    """One training iteration (forward, backward, Adam step), synchronised on CUDA."""

    def run() -> None:
        setup.optimizer.zero_grad()
        ys = solve(setup.field, setup.y0, setup.t)
        (ys - setup.target).pow(2).mean().backward()
        setup.optimizer.step()
        if setup.y0.is_cuda:
            torch.cuda.synchronize()

    return run


def solvers(problem: Problem) -> dict[str, Callable[[CountedFunc, Tensor, Tensor], Tensor]]:
    """Method name -> ``solve(field, y0, t) -> ys``, every one at the problem's tolerances."""
    tolerances = {"rtol": problem.rtol, "atol": problem.atol}
    methods = {
        "torchdiffeq odeint": lambda f, y0, t: torchdiffeq.odeint(f, y0, t, method="dopri5", **tolerances),
        "torchdiffeq odeint_adjoint": lambda f, y0, t: torchdiffeq.odeint_adjoint(
            f, y0, t, method="dopri5", adjoint_params=tuple(f.parameters()), **tolerances),
    }
    for backend in BACKENDS:
        methods[f"odegrad {backend}"] = (
            lambda f, y0, t, backend=backend: odegrad.odeint(f, y0, t, method="dopri5", gradient=backend,
                                                             **tolerances))
    return methods


def nfe_of(setup: Setup, run: Callable[[], None]) -> int:
    before = setup.field.nfe
    run()
    return setup.field.nfe - before


def time_problem(problem: Problem, device: torch.device, repeats: int) -> dict[str, tuple[float, int]]:
    """Method -> (median seconds per training iteration, NFE of one iteration)."""
    setup = make_setup(problem, device)
    runs = {name: iteration(setup, solve) for name, solve in solvers(problem).items()}
    nfe = {name: nfe_of(setup, run) for name, run in runs.items()}
    seconds = paired_median_times(list(runs.values()), repeats)
    return {name: (s, nfe[name]) for name, s in zip(runs, seconds)}


# ---- diffrax (run in its own process: ``--diffrax PROBLEM_JSON``) ---------------------------------

def diffrax_times(problem: Problem, repeats: int) -> dict[str, float]:
    """Seconds per jitted training iteration of diffrax with direct and backsolve adjoints."""
    import time

    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.PRNGKey(0)
    k_model, k_y0, k_target = jax.random.split(key, 3)
    mlp = eqx.nn.MLP(problem.dim, problem.dim, problem.width, depth=2, activation=jnp.tanh, key=k_model)
    y0 = jax.random.normal(k_y0, (problem.batch, problem.dim))
    ts = jnp.array(problem.times)
    target = jax.random.normal(k_target, (len(problem.times), problem.batch, problem.dim))
    optimizer = optax.adam(1e-5)
    term = diffrax.ODETerm(lambda t, y, model: jax.vmap(model)(y))
    controller = diffrax.PIDController(rtol=problem.rtol, atol=problem.atol)

    out = {}
    for name, adjoint in (("diffrax RecursiveCheckpointAdjoint", diffrax.RecursiveCheckpointAdjoint()),
                          ("diffrax BacksolveAdjoint", diffrax.BacksolveAdjoint())):
        def loss(model, adjoint=adjoint):
            solution = diffrax.diffeqsolve(term, diffrax.Dopri5(), ts[0], ts[-1], None, y0, args=model,
                                           saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                           adjoint=adjoint, max_steps=100_000)
            return jnp.mean((solution.ys - target) ** 2)

        @eqx.filter_jit
        def step(model, state, loss=loss):
            value, grads = eqx.filter_value_and_grad(loss)(model)
            updates, state = optimizer.update(grads, state, model)
            return eqx.apply_updates(model, updates), state, value

        model, state = mlp, optimizer.init(eqx.filter(mlp, eqx.is_array))
        model, state, value = step(model, state)
        value.block_until_ready()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            model, state, value = step(model, state)
            value.block_until_ready()
            samples.append(time.perf_counter() - start)
        out[name] = sorted(samples)[len(samples) // 2]
    return out


def diffrax_in_subprocess(problem: Problem, repeats: int) -> dict[str, float]:
    """diffrax's times from a fresh process, or {} (with the reason printed) when it cannot run."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    spec = json.dumps({**problem.__dict__, "repeats": repeats})
    result = subprocess.run([sys.executable, __file__, "--diffrax", spec], capture_output=True, text=True,
                            env=env, timeout=600)
    if result.returncode != 0:
        print(f"(diffrax skipped for {problem.name}: {result.stderr.strip().splitlines()[-1:]})")
        return {}
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- report ------------------------------------------------------------------------------------

def report(problem: Problem, times: dict[str, tuple[float, int]], diffrax: dict[str, float]) -> str:
    baseline = times["torchdiffeq odeint_adjoint"][0]
    direct = times["odegrad direct"][0]
    lines = [f"\n### {problem.name}: MLP {problem.dim}-{problem.width}-{problem.width}-{problem.dim} tanh, "
             f"batch {problem.batch}, t = {list(problem.times)[0]}..{list(problem.times)[-1]} "
             f"({len(problem.times)} outputs), dopri5 rtol {problem.rtol:g} atol {problem.atol:g}",
             "| method | train iteration [ms] | NFE (fwd + bwd) | vs torchdiffeq adjoint | vs odegrad direct |",
             "|---|---|---|---|---|"]
    rows = [(name, s, str(n)) for name, (s, n) in times.items()] + [(n, s, "–") for n, s in diffrax.items()]
    for name, seconds, nfe in rows:
        lines.append(f"| {name} | {seconds * 1e3:.1f} | {nfe} | {seconds / baseline:.2f}x | {seconds / direct:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small batches, 2 repeats (smoke run)")
    parser.add_argument("--problems", nargs="+", help="names of problems to run (default: all)")
    parser.add_argument("--no-diffrax", action="store_true", help="skip the diffrax rows")
    parser.add_argument("--diffrax", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.diffrax:
        spec = json.loads(args.diffrax)
        repeats = spec.pop("repeats")
        spec["times"] = tuple(spec["times"])
        print(json.dumps(diffrax_times(Problem(**spec), repeats)))
        return
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, 1 thread"
    print(f"## bench_gpu on {name} (torch {torch.__version__})")
    repeats = 2 if args.quick else args.repeats
    for problem in problems(args.quick):
        if args.problems and problem.name not in args.problems:
            continue
        times = time_problem(problem, device, repeats)
        diffrax = {} if args.no_diffrax else diffrax_in_subprocess(problem, repeats)
        print(report(problem, times, diffrax), flush=True)


if __name__ == "__main__":
    main()
