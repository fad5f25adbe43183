"""Peak memory of one training iteration per gradient method, each measured in a fresh process.

Problems (``common.PROBLEMS``, dopri5, float32, loss mean(ys²)): the large model MLP 64-512-512-64
tanh, batch 4096, 10 outputs on [0, 1], rtol 1e-5; and MLP 32-256-256-32, batch 2048, t = [0, T],
rtol 1e-6, at T = 1 and T = 50. Methods: torchdiffeq ``odeint`` (direct) and ``odeint_adjoint``,
odegrad ``direct``, ``backsolve``, ``gq``, ``interp``. Sweeps: the adjoint-type methods over the
horizon T = 1, 10, 50, 200; gq and backsolve over the batch size, gq over its node count
(``GaussQuadrature(nodes=n)``), both at T = 1.

Every (problem, method) runs in its own process (this script with ``--worker``): in one shared
process the allocator's cache and earlier methods' leftovers made peaks misleading. The worker
builds the problem, runs one warm-up iteration (forward + backward), then measures one more:

* ``--device cuda``: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``,
  minus ``memory_allocated()`` before the iteration: the most tensor memory alive at once above
  the model, the data and the library's workspaces.
* ``--device cpu``: the same quantity from the CPU allocator's allocation trace
  (``common.peak_tensor_mib``: every tensor allocation and free the PyTorch profiler records,
  summed in time order; the peak of that sum). This is the CPU analogue of
  ``max_memory_allocated`` and counts tensor bytes exactly. The resident-set rise is not used:
  after the warm-up, malloc serves the iteration from memory it already holds, so the kernel's
  high-water mark barely moves whatever the method allocates.

Ratios are against torchdiffeq's ``odeint_adjoint`` and against odegrad's ``backsolve`` on the
same problem. On 2 CPU cores use ``--batch-divisor`` (e.g. 8) to shrink every batch. Unless
``--quick``, the script then times one training iteration of the adjoint-type methods at T = 1 and
T = 50 in this process (median of ``--repeats``, methods alternating, CUDA synchronised).

    python benchmarks/bench_memory.py --device cuda            # ≈ a minute on one H100
    python benchmarks/bench_memory.py --batch-divisor 8        # CPU, a few minutes on 2 cores
    python benchmarks/bench_memory.py --quick --batch-divisor 32   # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import HORIZONS, PROBLEMS, paired_median_times, peak_tensor_mib, ratio, train_iteration

import odegrad

METHOD_NAMES = ("tdq direct", "tdq adjoint", "direct", "backsolve", "gq", "interp")
ADJOINTS = ("tdq adjoint", "backsolve", "gq", "interp")
"""The methods of the horizon sweep."""
BATCH_FACTORS = (0.25, 0.5, 1.0)
"""Batch-size sweep of gq and backsolve at T = 1, as fractions of the problem's batch."""
NODE_COUNTS = (4, 16, 64)
"""Node-count sweep of gq at T = 1 (``GaussQuadrature(nodes=n)``)."""
WORKER_TIMEOUT_S = 600


def measure(problem_key: str, method: str, device: str, batch: int) -> dict:
    """Peak memory of one training iteration (after a warm-up one), in this process."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the reverse-drift warnings at T = 50 (see common.METHODS)
    problem = PROBLEMS[problem_key]
    field, y0, t = problem.make(device, batch=batch)
    iteration = train_iteration(problem, method, field, y0, t)
    iteration()
    steps = odegrad.solve(field, y0, t, rtol=problem.rtol, atol=problem.atol).stats.steps_accepted
    field.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        iteration()
        return {"peak": (torch.cuda.max_memory_allocated() - before) / 2 ** 20, "steps": steps}
    return {"peak": peak_tensor_mib(iteration), "steps": steps}


def iteration_times(problem_key: str, device: str, batch: int, repeats: int) -> list[float]:
    """Median seconds of one training iteration of each of :data:`ADJOINTS`, run alternately."""
    problem = PROBLEMS[problem_key]
    field, y0, t = problem.make(device, batch=batch)
    return paired_median_times([train_iteration(problem, method, field, y0, t) for method in ADJOINTS], repeats)


def run_worker(problem_key: str, method: str, device: str, batch: int) -> dict:
    """:func:`measure` in a fresh Python process; ``{"error": ...}`` if it fails."""
    spec = json.dumps([problem_key, method, device, batch])
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", spec],
                              capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {WORKER_TIMEOUT_S} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                     platform.processor())
    return f"CPU ({model}), 1 thread per process"


def _mib(row: dict) -> str:
    return f"{row['peak']:.1f}" if "peak" in row else f"failed: {row['error']}"


def _ratio(row: dict, base: dict) -> str:
    return ratio(row["peak"], base["peak"]) if "peak" in row and "peak" in base else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-divisor", type=int, default=1, help="divide every batch size by this")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes at once (default: 8 on cuda, 1 on cpu); memory is per process")
    parser.add_argument("--quick", action="store_true", help="smoke run: T = 1 and T = 50 only, no sweeps")
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per method")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(*json.loads(args.worker))))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    jobs = args.jobs or (8 if args.device == "cuda" else 1)
    problems = ("T1", "T50") if args.quick else ("large", "T1", "T50")
    base_batch = {key: max(PROBLEMS[key].batch // args.batch_divisor, 1) for key in problems}
    plan = [(key, method, base_batch[key]) for key in problems for method in METHOD_NAMES]
    if not args.quick:
        sweep = [f"T{T}" for T in HORIZONS if f"T{T}" not in problems]
        base_batch.update({key: max(PROBLEMS[key].batch // args.batch_divisor, 1) for key in sweep})
        plan += [(key, method, base_batch[key]) for key in sweep for method in ADJOINTS]
        plan += [("T1", method, max(int(base_batch["T1"] * factor), 1))
                 for factor in BATCH_FACTORS[:-1] for method in ("backsolve", "gq")]
        plan += [("T1", f"gq(nodes={n})", base_batch["T1"]) for n in NODE_COUNTS]
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = dict(zip(plan, pool.map(lambda job: run_worker(job[0], job[1], args.device, job[2]), plan)))

    print(f"Peak memory of one training iteration (forward + backward), MiB, fresh process per row, "
          f"{'torch.cuda.max_memory_allocated' if args.device == 'cuda' else 'profiler allocation trace'}"
          f" — {device_name(args.device)}, torch {torch.__version__}, float32, dopri5 "
          f"({len(plan)} processes, {jobs} at a time, {time.perf_counter() - start:.0f} s)\n")
    print("| problem | batch | steps | method | peak MiB | vs tdq adjoint | vs backsolve |")
    print("|---|---|---|---|---|---|---|")
    for key in problems:
        batch = base_batch[key]
        adjoint, backsolve = results[(key, "tdq adjoint", batch)], results[(key, "backsolve", batch)]
        for method in METHOD_NAMES:
            row = results[(key, method, batch)]
            print(f"| {PROBLEMS[key].name} | {batch} | {row.get('steps', '')} | {method} | {_mib(row)} "
                  f"| {_ratio(row, adjoint)} | {_ratio(row, backsolve)} |")
    if args.quick:
        return 0
    print(f"\nAdjoint-type methods over the horizon ({PROBLEMS['T1'].name.split(',')[0]}, batch {base_batch['T1']}), "
          "MiB (ratio to backsolve):\n")
    print("| T | steps | " + " | ".join(ADJOINTS) + " |")
    print("|---|---|" + "---|" * len(ADJOINTS))
    for T in HORIZONS:
        key = f"T{T}"
        rows = [results[(key, method, base_batch[key])] for method in ADJOINTS]
        cells = [f"{_mib(row)} ({_ratio(row, rows[1])})" for row in rows]
        print(f"| {T} | {rows[1].get('steps', '')} | " + " | ".join(cells) + " |")
    print(f"\ngq vs backsolve over the batch size ({PROBLEMS['T1'].name}):\n")
    print("| batch | gq MiB | backsolve MiB | gq / backsolve |")
    print("|---|---|---|---|")
    for factor in BATCH_FACTORS:
        batch = max(int(base_batch["T1"] * factor), 1)
        gq, backsolve = results[("T1", "gq", batch)], results[("T1", "backsolve", batch)]
        print(f"| {batch} | {_mib(gq)} | {_mib(backsolve)} | {_ratio(gq, backsolve)} |")
    print(f"\ngq over its node count per segment ({PROBLEMS['T1'].name}, batch {base_batch['T1']}):\n")
    print("| nodes | gq MiB | gq / backsolve |")
    print("|---|---|---|")
    backsolve = results[("T1", "backsolve", base_batch["T1"])]
    for n in NODE_COUNTS:
        row = results[("T1", f"gq(nodes={n})", base_batch["T1"])]
        print(f"| {n} | {_mib(row)} | {_ratio(row, backsolve)} |")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the reverse-drift warnings at T = 50 (see common.METHODS)
    print(f"\nTime of one training iteration, ms (median of {args.repeats}, alternating; ratio to backsolve):\n")
    print("| problem | batch | " + " | ".join(ADJOINTS) + " |")
    print("|---|---|" + "---|" * len(ADJOINTS))
    for key in ("T1", "T50"):
        seconds = iteration_times(key, args.device, base_batch[key], args.repeats)
        cells = [f"{s * 1e3:.1f} ({ratio(s, seconds[1])})" for s in seconds]
        print(f"| {PROBLEMS[key].name} | {base_batch[key]} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
