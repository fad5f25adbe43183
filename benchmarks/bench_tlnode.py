"""TL-NODE training speed vs adaptive dopri5 at equal test loss: seeds × tasks, CPU or CUDA,
eager and compiled.

For each of the TL-NODE paper's task kinds (examples/: spiral and Lotka–Volterra system
identification, digits classification, 2-D CNF density estimation) the same model is trained with
the same initialisation, data order and optimiser as: TL-NODE eager, TL-NODE with its batch loss
and backward compiled (``torch.compile(fullgraph=True)``; ``mode="reduce-overhead"``, i.e. CUDA
graphs, on CUDA), odegrad dopri5 and torchdiffeq dopri5 (``method="torchdiffeq:dopri5"``, its own
solver and backprop), all with direct backpropagation. A run's time to target is its training
seconds until its test loss first reaches the common target of its (task, seed): the worst of the
runs' best test losses (+5%; +0.05 nats for the CNF). Compilation happens before the clock starts
and is reported beside. Speed-up = baseline time to target / TL-NODE time to target; the tables
give the median over seeds and the range.

The dopri5 tolerances (rtol 1e-4, atol 1e-5) are the honest baseline: there every task learns the
same curve as at 1e-7 / 1e-9 with about a third of the NFE, while at 1e-3 / 1e-4 spiral reaches
the target later, Lotka–Volterra misses it and digits and the CNF save little. The goal: ≥ 5x vs
odegrad's dopri5 and ≥ 10x vs torchdiffeq's.

Each (task, seed) runs in its own single-thread process, ``--jobs`` at a time: give the machine
at least as many cores as jobs, or the runs slow each other down unevenly.

    python benchmarks/bench_tlnode.py --jobs 16                    # 3 seeds x 4 tasks + breakdown, 16 cores
    python benchmarks/bench_tlnode.py --device cuda --jobs 4       # CUDA graphs for the compiled TL-NODE
    python benchmarks/bench_tlnode.py --quick --seeds 0            # smoke run (numbers meaningless)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import density_cnf  # noqa: E402
import digits_classification  # noqa: E402
import lotka_volterra  # noqa: E402
from _harness import Run, Target, common_target, comparison_report  # noqa: E402

from odegrad.demo import SpiralField, spiral_data  # noqa: E402
from odegrad.jet import taylor_coefficients  # noqa: E402
from odegrad.models import TLNODE  # noqa: E402
from odegrad.solvers import LearnedMidpoint, Taylor  # noqa: E402

BASELINES = ["dopri5", "torchdiffeq:dopri5"]


@dataclass(frozen=True)
class Job:
    """One (task, seed) comparison; ``compile_modes`` lists the TL-NODE runs (None: eager);
    ``baselines`` False trains the eager TL-NODE only (the cost breakdown)."""

    task: str
    seed: int
    device: str
    iterations: int
    compile_modes: tuple[str | None, ...]
    baselines: bool = True
    compile_threads: int = 1


def _compare(job: Job) -> list[Run]:
    """The job's runs: TL-NODE runs first, then the baselines."""
    _, _, _, rtol, atol, _ = TASKS[job.task]
    device = torch.device(job.device)
    kwargs = {"progress": False, "seed": job.seed, "compile_modes": job.compile_modes}
    baselines = BASELINES if job.baselines else []
    if job.task in ("spiral", "lotka-volterra"):
        if job.task == "spiral":
            t, ys = spiral_data()
            task = lotka_volterra.TrajectoryTask(t, ys[:, None], batch_size=16, segment=10)
            field = SpiralField
        else:
            task, field = lotka_volterra.lotka_volterra_task(job.seed), lotka_volterra.Field
        return lotka_volterra.compare(task.to(device), field, job.iterations, 1, 1, baselines, rtol, atol,
                                      **kwargs)[0]
    if job.task == "digits":
        return digits_classification.compare(job.iterations, 1, 1, baselines, rtol, atol, device=device, **kwargs)
    return density_cnf.compare(job.iterations, 1, 4, baselines, rtol, atol, device=device, **kwargs)[0]


TASKS: dict[str, tuple[int, int, Callable[[list[Run]], Target], float, float, str]] = {
    # name: (iterations, quick iterations, target rule, dopri5 rtol, atol, what the loss is)
    "spiral": (300, 30, common_target, 1e-4, 1e-5, "test MSE"),
    "lotka-volterra": (300, 30, common_target, 1e-4, 1e-5, "test MSE"),
    "digits": (300, 30, common_target, 1e-4, 1e-5, "test cross-entropy"),
    "cnf-8gauss": (200, 20, lambda runs: common_target(runs, relative=0.0, absolute=0.05), 1e-4, 1e-5,
                   "test NLL (dopri5-evaluated)"),
}


class _Timers:
    """Seconds spent in wrapped methods during training forward passes (grad enabled), with the
    device synchronised around each call."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: type, name: str, label: str) -> Callable[[], None]:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if not torch.is_grad_enabled():
                return original(*args, **kwargs)
            _sync(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            _sync(self.device)
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
            return out

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _breakdown(job: Job) -> dict[str, float]:
    """Milliseconds per eager TL-NODE training iteration: the whole iteration, the forward pass,
    and inside it the Taylor coefficients at the midpoint (f(ξ) and the jet), the midpoint network,
    and the rest (f(y) and the step's arithmetic); backward + optimiser = iteration − forward."""
    timers = _Timers(torch.device(job.device))
    restore = [timers.wrap(TLNODE, "forward", "forward"),
               timers.wrap(Taylor, "coefficients", "coefficients"),
               timers.wrap(LearnedMidpoint, "forward", "midpoint")]
    try:
        run = _compare(job)[0]
    finally:
        for undo in restore:
            undo()
    ms = {label: 1e3 * seconds / job.iterations for label, seconds in timers.seconds.items()}
    iteration = 1e3 * run.train_seconds / job.iterations
    return {"iteration": iteration, "jet at ξ (incl. f(ξ))": ms["coefficients"], "midpoint net": ms["midpoint"],
            "f(y) + step arithmetic": ms["forward"] - ms["coefficients"] - ms["midpoint"],
            "loss, backward, optimiser": iteration - ms["forward"]}


def _fused_mlp_y2(net: torch.nn.Sequential, y: torch.Tensor) -> torch.Tensor:
    """y₂ = ½ ∂f/∂y · f for f = a Linear/Tanh ``net``, written out: one forward pass keeping the
    activations, then the tangent pass reusing them (what no general rule can do: the tangent
    f(ξ) is the output of the same pass)."""
    activations, h = [], y
    for layer in net:
        h = layer(h)
        activations.append(h)
    tangent = h
    for layer, out in zip(net, activations):
        tangent = tangent @ layer.weight.T if isinstance(layer, torch.nn.Linear) else (1 - out * out) * tangent
    return tangent / 2


def _coefficient_paths(device: str, batch: int, repeats: int = 200) -> dict[str, tuple[float, float]]:
    """µs for y₂(ξ) of the Lotka–Volterra field (f(ξ) and its jet), forward and forward + backward, by
    each way to compute it."""
    import torch.autograd.forward_ad as fwad

    torch.manual_seed(0)
    net = lotka_volterra.Field().net.to(device)
    xi = torch.randn(batch, 2, device=device)
    t = torch.zeros((), device=device)
    field = lambda _t, y: net(y)

    def dual() -> torch.Tensor:
        with fwad.dual_level():
            return fwad.unpack_dual(net(fwad.make_dual(xi, net(xi)))).tangent / 2

    paths = {
        "Jet (odegrad.jet, mode='taylor')": lambda: taylor_coefficients(field, t, xi, 2)[-1],
        "torch.func.jvp (mode='jvp')": lambda: torch.func.jvp(net, (xi,), (net(xi),))[1] / 2,
        "forward-mode dual tensors": dual,
        "hand-fused Linear+tanh (not general)": lambda: _fused_mlp_y2(net, xi),
    }
    reference = paths["Jet (odegrad.jet, mode='taylor')"]()
    times = {}
    for name, path in paths.items():
        torch.testing.assert_close(path(), reference, rtol=1e-4, atol=1e-6)
        measured = []
        for backward in (False, True):
            for _ in range(10):
                path()
            _sync(torch.device(device))
            start = time.perf_counter()
            for _ in range(repeats):
                out = path()
                if backward:
                    torch.autograd.grad(out.sum(), list(net.parameters()))
            _sync(torch.device(device))
            measured.append(1e6 * (time.perf_counter() - start) / repeats)
        times[name] = (measured[0], measured[1])
    return times


def _run(job: Job) -> tuple[Job, list[Run] | dict[str, float] | str]:
    """The job's runs (or breakdown), or the error that stopped it (the other jobs go on)."""
    torch.set_num_threads(1)
    torch._inductor.config.compile_threads = job.compile_threads  # parallel jobs share the cores
    torch._dynamo.reset()  # each job compiles as a fresh process would (inductor's disk cache stays)
    try:
        return job, (_compare(job) if job.baselines else _breakdown(job))
    except Exception as error:  # reported in the output: one failed job must not sink the others
        return job, f"{type(error).__name__}: {error}"


def _median_range(values: Sequence[float], unit: str = "", digits: int = 2) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    text = f"{statistics.median(finite):.{digits}f}{unit}"
    if len(finite) > 1:
        text += f" ({min(finite):.{digits}f}–{max(finite):.{digits}f})"
    return text + ("" if len(finite) == len(values) else f" [{len(values) - len(finite)} missed]")


def _summary(results: dict[str, list[list[Run]]], device: str) -> str:
    """Median (range) over seeds of the times to target and the speed-ups, per task."""
    lines = ["| task | target rule | TL-NODE run | time to target [s] | compile [s] | odegrad dopri5 [s] | "
             "torchdiffeq dopri5 [s] | vs odegrad dopri5 (goal ≥ 5x) | vs torchdiffeq dopri5 (goal ≥ 10x) | "
             "NFE TL / dopri5 / tdq | final loss TL / dopri5 / tdq |", "|" + "---|" * 11]
    for task, per_seed in results.items():
        rule = TASKS[task][2](per_seed[0]).rule.replace("the worst of the runs' best test losses", "worst best")
        tl_count = len(per_seed[0]) - len(BASELINES)
        for index in range(tl_count):
            times, compile_s, base, ratios = [], [], [[], []], [[], []]
            for runs in per_seed:
                target = TASKS[task][2](runs).value
                mine = runs[index].seconds_to(target)
                times.append(mine)
                compile_s.append(runs[index].compile_seconds)
                for k, baseline in enumerate(runs[tl_count:]):
                    seconds = baseline.seconds_to(target)
                    base[k].append(seconds)
                    ratios[k].append(seconds / mine if mine > 0 else math.nan)
            runs = per_seed[0]
            nfe = " / ".join(f"{r.nfe_per_forward:.1f}" for r in (runs[index], *runs[tl_count:]))
            finals = " / ".join(f"{statistics.median(rs[j].final_loss for rs in per_seed):.4g}"
                                for j in (index, *range(tl_count, len(runs))))
            name = runs[index].name.replace("TL-NODE p=1 ", "")
            lines.append(f"| {task} | {rule} | {name} | {_median_range(times)} | "
                         f"{_median_range(compile_s, digits=1) if any(compile_s) else '–'} | "
                         f"{_median_range(base[0])} | {_median_range(base[1])} | {_median_range(ratios[0], 'x', 1)} | "
                         f"{_median_range(ratios[1], 'x', 1)} | {nfe} | {finals} |")
    return "\n".join(lines)


def _breakdown_table(rows: dict[str, dict[str, float]], results: dict[str, list[list[Run]]], iterations: dict) -> str:
    labels = next(iter(rows.values())).keys()
    head = ["task", *(f"TL eager: {label} [ms]" for label in labels), "TL compiled iteration [ms]",
            "odegrad dopri5 iteration [ms]", "torchdiffeq dopri5 iteration [ms]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, ms in rows.items():
        cells = [f"{ms[label]:.2f}" for label in labels]
        per_seed = results.get(task, [])
        for name in ("compiled", "dopri5", "torchdiffeq:dopri5"):
            seconds = [r.train_seconds for runs in per_seed for r in runs
                       if (name in r.name if name == "compiled" else r.name == name)]
            cells.append(f"{1e3 * statistics.median(seconds) / iterations[task]:.2f}" if seconds else "–")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", default="auto", choices=["auto", "none", "default", "reduce-overhead"],
                        help="compiled TL-NODE runs: auto = default on CPU, reduce-overhead (CUDA graphs) on CUDA")
    parser.add_argument("--jobs", type=int, default=1, help="(task, seed) runs in parallel, one thread each")
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-iteration cost breakdown")
    args = parser.parse_args(argv)
    mode = {"auto": "reduce-overhead" if args.device == "cuda" else "default", "none": None}.get(args.compile,
                                                                                                 args.compile)
    iterations = {task: TASKS[task][1 if args.quick else 0] for task in args.tasks}
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    # seed-major order: later seeds find the first seed's compiled kernels in inductor's cache
    jobs = [Job(task, seed, args.device, iterations[task], (None,) if mode is None else (None, mode),
                compile_threads=threads) for seed in args.seeds for task in args.tasks]
    if not args.no_breakdown:
        jobs += [Job(task, args.seeds[0], args.device, min(iterations[task], 50), (None,), baselines=False)
                 for task in args.tasks]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(_run, jobs))
    else:
        done = [_run(job) for job in jobs]
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# TL-NODE vs dopri5, time to a common test loss: {device}, one thread per run, "
          f"{args.jobs} run(s) at a time, seeds {args.seeds}")
    results: dict[str, list[list[Run]]] = {}
    breakdown: dict[str, dict[str, float]] = {}
    for job, outcome in done:
        if isinstance(outcome, str):
            print(f"\n## {job.task}, seed {job.seed}{'' if job.baselines else ' (breakdown)'}: FAILED: {outcome}")
            continue
        if isinstance(outcome, dict):
            breakdown[job.task] = outcome
            continue
        results.setdefault(job.task, []).append(outcome)
        _, _, rule, rtol, atol, loss_name = TASKS[job.task]
        print(f"\n## {job.task}, seed {job.seed}: {loss_name}, dopri5 rtol={rtol:g} atol={atol:g}")
        print(comparison_report(outcome, rule(outcome), reference="dopri5"))
    print("\n## Summary: median (range) over seeds; compiled runs' time to target excludes the compile time")
    print(_summary(results, args.device))
    if breakdown:
        print("\n## Cost per training iteration (seed", args.seeds[0], "; eager parts timed with the device "
              "synchronised; compiled and dopri5 iterations from the runs above)")
        print(_breakdown_table(breakdown, results, iterations))
        torch.set_num_threads(1)
        print("\n## The order-1 remainder coefficient y₂(ξ) = ½ ∂f/∂y·f(ξ) of the Lotka–Volterra field "
              "(64-64 tanh MLP), f(ξ) included: µs per call, forward / forward + backward")
        print("| path | batch 32 | batch 4096 |\n|---|---|---|")
        small, large = _coefficient_paths(args.device, 32), _coefficient_paths(args.device, 4096, repeats=20)
        for name in small:
            print(f"| {name} | {small[name][0]:.0f} / {small[name][1]:.0f} | {large[name][0]:.0f} / "
                  f"{large[name][1]:.0f} |")


if __name__ == "__main__":
    main()
