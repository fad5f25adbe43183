"""Training-iteration time of odegrad's gradient backends vs torchdiffeq and jitted diffrax, on
one device: the time rows of issue 19's table.

Problems: ``common.PROBLEMS`` (float32 MLP fields with PyTorch's default initialisation, dopri5;
loss mean(ys²) over all outputs): the large model MLP 64-512-512-64 tanh, batch 4096, 10 outputs
on [0, 1], rtol 1e-5; MLP 32-256-256-32, batch 2048, t = [0, T], rtol 1e-6 at T = 1, 10 and 50
(``--problems T200`` adds the longest horizon).
Methods: ``common.METHODS`` (torchdiffeq ``odeint`` and ``odeint_adjoint`` — the ratio column's
baseline — and odegrad ``direct``, ``backsolve``, ``gq``, ``interp``), one iteration = forward +
backward into the field's parameters. Times are medians over ``--repeats`` iterations, methods
alternating, CUDA-synchronised. NFE: calls of the field in one iteration (odegrad's gq evaluates a
segment's quadrature nodes in batched calls, so its count is lower than its node count).

diffrax (``--diffrax-problems``, default the large model): ``diffeqsolve`` with Dopri5 and a
PIDController at the same tolerances, ``SaveAt(ts=...)``, ``RecursiveCheckpointAdjoint`` (direct)
and ``BacksolveAdjoint``; ``eqx.filter_jit`` of value-and-grad, timed after one compiling call, in
a fresh process of ``--diffrax-python`` so JAX and PyTorch do not share the GPU's allocator (rows
are skipped, with the reason, where that interpreter has no diffrax). Its MLP has the same shape
but JAX's initialisation, so its NFE may differ: the step counts are printed beside.

``--compiled`` adds each odegrad method under ``torch.compile(fullgraph=True)`` (``common.
COMPILED_METHODS``: the traced driver, and one traced backward sweep for the adjoint backends),
``--cpp-wrapper`` the adjoint backends compiled with inductor's C++ wrapper (``CPP_WRAPPER_METHODS``);
their first call (not timed) compiles, and their field-call count is not measured (n/a: calls
inside a compiled loop are not counted).

Peak memory is measured by ``bench_memory.py`` (a fresh process per method); compiled fixed-cost
paths by ``bench_overhead.py`` and ``bench_tlnode.py``; ``gpu_suite.sh`` runs them all.

    python benchmarks/bench_gpu.py                  # CUDA when available, else CPU (1 thread)
    python benchmarks/bench_gpu.py --quick          # smoke run (batch / 16, 2 repeats)
    python benchmarks/bench_gpu.py --problems large --compiled   # compiled vs eager vs diffrax
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch
from common import (
    COMPILED_METHODS,
    CPP_WRAPPER_METHODS,
    METHODS,
    PROBLEMS,
    ODEProblem,
    paired_median_times,
    train_iteration,
)

from odegrad.solvers import CountedFunc


def time_problem(problem: ODEProblem, device: str, batch: int, repeats: int, compiled: bool = False,
                 cpp_wrapper: bool = False) -> dict[str, tuple[float, int]]:
    """Method -> (median seconds per training iteration, calls of the field in one iteration; -1
    for compiled methods, whose calls inside a compiled loop are not counted)."""
    raw, y0, t = problem.make(device, batch=batch)
    field = CountedFunc(raw)  # compiled methods get the raw field: a changing counter would recompile them
    compiled_names = [*(COMPILED_METHODS if compiled else ()), *(CPP_WRAPPER_METHODS if cpp_wrapper else ())]
    runs = {name: train_iteration(problem, name, raw if name in compiled_names else field, y0, t)
            for name in [*METHODS, *compiled_names]}
    nfe = {}
    for name, run in runs.items():  # the first call: counts calls, and compiles the compiled methods
        before = field.nfe
        run()
        nfe[name] = -1 if name in compiled_names else field.nfe - before
    seconds = paired_median_times(list(runs.values()), repeats)
    return {name: (s, nfe[name]) for name, s in zip(runs, seconds)}


def diffrax_times(problem: ODEProblem, batch: int, repeats: int) -> dict[str, tuple[float, int]]:
    """diffrax method -> (median seconds per jitted value-and-grad, accepted + rejected steps)."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    k_model, k_y0 = jax.random.split(jax.random.PRNGKey(0))
    dims = problem.dims
    model = eqx.nn.MLP(dims[0], dims[-1], dims[1], depth=len(dims) - 2, activation=jnp.tanh, key=k_model)
    y0 = jax.random.normal(k_y0, (batch, dims[0]))
    ts = jnp.linspace(0.0, problem.t_end, problem.outputs)
    term = diffrax.ODETerm(lambda t, y, field: jax.vmap(field)(y))
    controller = diffrax.PIDController(rtol=problem.rtol, atol=problem.atol)
    out = {}
    for name, adjoint in (("diffrax RecursiveCheckpointAdjoint", diffrax.RecursiveCheckpointAdjoint()),
                          ("diffrax BacksolveAdjoint", diffrax.BacksolveAdjoint())):
        def solve(field, adjoint=adjoint):
            return diffrax.diffeqsolve(term, diffrax.Dopri5(), ts[0], ts[-1], None, y0, args=field,
                                       saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                       adjoint=adjoint, max_steps=100_000)

        @eqx.filter_jit
        def value_and_grad(field, solve=solve):
            return eqx.filter_value_and_grad(lambda f: jnp.mean(solve(f).ys ** 2))(field)

        jax.block_until_ready(value_and_grad(model))
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(value_and_grad(model))
            samples.append(time.perf_counter() - start)
        stats = eqx.filter_jit(solve)(model).stats
        out[name] = (sorted(samples)[len(samples) // 2], int(stats["num_steps"]))
    return out


def diffrax_in_subprocess(key: str, batch: int, repeats: int, python: str) -> dict[str, tuple[float, int]]:
    """diffrax's rows from a fresh process, or {} (with the reason printed) where it cannot run."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    command = [python, __file__, "--diffrax-worker", json.dumps([key, batch, repeats])]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"(diffrax rows skipped for {key}: {error})")
        return {}
    if result.returncode != 0:
        print(f"(diffrax rows skipped for {key}: {result.stderr.strip().splitlines()[-1:]})")
        return {}
    return {name: tuple(row) for name, row in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def report(problem: ODEProblem, batch: int, rows: dict[str, tuple[float, int]], diffrax: dict) -> str:
    """A markdown table: ms per iteration, field calls, ratios vs torchdiffeq's adjoint and odegrad direct."""
    baseline, direct = rows["tdq adjoint"][0], rows["direct"][0]
    lines = [f"\n### {problem.name}, batch {batch}, dopri5 rtol {problem.rtol:g} atol {problem.atol:g}",
             "| method | forward + backward [ms] | field calls (diffrax: steps) | vs torchdiffeq adjoint "
             "| vs odegrad direct |", "|---|---|---|---|---|"]
    for name, (seconds, count) in {**rows, **diffrax}.items():
        lines.append(f"| {name} | {seconds * 1e3:.1f} | {count if count >= 0 else 'n/a'} | {seconds / baseline:.2f}x "
                     f"| {seconds / direct:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--problems", nargs="+", default=["large", "T1", "T10", "T50"], choices=list(PROBLEMS))
    parser.add_argument("--diffrax-problems", nargs="*", default=["large"], choices=list(PROBLEMS))
    parser.add_argument("--diffrax-python", default=sys.executable, help="an interpreter with jax and diffrax")
    parser.add_argument("--quick", action="store_true", help="batch / 16, 2 repeats (smoke run)")
    parser.add_argument("--compiled", action="store_true", help="also time odegrad under torch.compile(fullgraph=True)")
    parser.add_argument("--cpp-wrapper", action="store_true",
                        help="also time the adjoint backends compiled with inductor's C++ wrapper")
    parser.add_argument("--diffrax-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.diffrax_worker:
        key, batch, repeats = json.loads(args.diffrax_worker)
        print(json.dumps(diffrax_times(PROBLEMS[key], batch, repeats)))
        return
    warnings.simplefilter("ignore")  # backsolve/gq reverse-drift warnings at T = 50 (see common.METHODS)
    if args.device == "cpu":
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU, 1 thread"
    print(f"## bench_gpu on {name} (torch {torch.__version__})")
    repeats = 2 if args.quick else args.repeats
    for key in args.problems:
        problem = PROBLEMS[key]
        batch = max(problem.batch // (16 if args.quick else 1), 1)
        rows = time_problem(problem, args.device, batch, repeats, args.compiled, args.cpp_wrapper)
        diffrax = {}
        if key in args.diffrax_problems:
            diffrax = diffrax_in_subprocess(key, batch, repeats, args.diffrax_python)
        print(report(problem, batch, rows, diffrax), flush=True)


if __name__ == "__main__":
    main()
