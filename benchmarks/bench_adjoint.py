"""Adjoint-type gradient backends of odegrad vs torchdiffeq's ``odeint_adjoint``, in one process.

Tasks (model names for ``--models``):
  mlp50   torchdiffeq's spiral demo: y' = (y³)A, A = [[-0.1, 2], [-2, -0.1]], y0 = [2, 0],
          t ∈ [0, 25] at 1000 points, batches of 20 random 10-point segments, field MLP 2-50-2 tanh
          applied to y³, L1 loss on all 10 points (9 segments between observation times).
  mlp512  the same with a 3-layer width-512 MLP (2-512-512-2, ~265k parameters).
  digits  an MNIST-sized-parameter ODE block: the 64-pixel scikit-learn digits as the state,
          field MLP 64-512-512-64 tanh (~330k parameters), t = [0, 1], cross-entropy of a fixed
          linear read-out of y(1), batches of 32 images.
Each field is pretrained briefly (Adam, odegrad direct) so the dynamics are not trivial.

For every method — torchdiffeq odeint_adjoint (the baseline, ratio 1.00x), optionally
torchdiffeq odeint_adjoint with its seminorm, and every odegrad backend named in ``--backends`` —
it prints:
  * time per training iteration (forward + backward + Adam step), median over ``--repeats``,
    methods run alternately so that load from other processes affects all alike;
  * forward and backward NFE of one iteration (odegrad: its Stats, which count each quadrature
    node as one evaluation even though gq evaluates them in one batched call; torchdiffeq: calls
    of the field during forward / backward);
  * peak tensor memory of one iteration (forward + backward): every tensor allocation and free
    the CPU allocator reports to the PyTorch profiler (``profile_memory=True``), summed in time
    order; the peak of that running sum is the most tensor memory alive at once above what
    existed before the iteration. This counts tensor bytes exactly, unlike RSS (page granularity,
    allocator caching) or tracemalloc (which does not see PyTorch's allocator at all). Frees of
    blocks allocated before profiling started are not reported (PyTorch warns about it), so the
    peak can only err upwards, and only by tensors that existed before the iteration;
  * relative gradient error ‖g − g_ref‖/‖g_ref‖ over all field parameters, where g_ref is odegrad
    ``direct`` on a float64 copy of the same field and batch at rtol=1e-10, atol=1e-12.
All methods use the same forward tolerances (``--rtol/--atol``, also the adjoint tolerances).

    python benchmarks/bench_adjoint.py --backends gq,interp,backsolve
    python benchmarks/bench_adjoint.py --backends "gq,gq(nodes=8),backsolve(seminorm=True)" --models mlp50
    python benchmarks/bench_adjoint.py --quick        # smoke run (about half a minute)
    python benchmarks/bench_adjoint.py --scaling      # also: peak memory vs number of forward steps
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq
from bench_spiral import MODELS, SpiralField, batches, pretrain, spiral_data
from common import paired_median_times, parse_backend, peak_tensor_mib, ratio
from torch import Tensor, nn

import odegrad
from odegrad.solvers import CountedFunc

REFERENCE_TOLERANCES = (1e-10, 1e-12)


@dataclass
class Task:
    """A model and its data: ``batches`` of (y0, t, target) and ``loss(ys, target)``."""

    name: str
    field: CountedFunc
    batches: list[tuple[Tensor, Tensor, Tensor]]
    loss: Callable[[Tensor, Tensor], Tensor]


@dataclass
class Method:
    """One way of computing gradients: ``make(rtol, atol)`` returns
    ``run(func, y0, t) -> (ys, odegrad Stats or None)``; ``run`` uses the main tolerances."""

    name: str
    make: Callable[[float, float], Callable]
    rtol: float
    atol: float

    def run(self, func, y0, t):
        return self.make(self.rtol, self.atol)(func, y0, t)


# ---- tasks -------------------------------------------------------------------------------------

def _l1(ys: Tensor, target: Tensor) -> Tensor:
    return (ys - target).abs().mean()


def spiral_task(name: str, dtype: torch.dtype, pretrain_iterations: int) -> Task:
    width, layers = MODELS[name]
    t, ys = spiral_data()
    data = [(y0.to(dtype), tt.to(dtype), target.to(dtype)) for y0, tt, target in batches(t, ys, count=32)]
    torch.manual_seed(1)
    field = CountedFunc(SpiralField(width, layers)).to(dtype)
    pretrain(field, data, pretrain_iterations, 1e-5, 1e-7)
    return Task(name, field, data, _l1)


class DigitsField(nn.Module):
    """``f(t, y) = MLP(y)`` on a 64-dimensional state."""

    def __init__(self, dim: int = 64, width: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, dim))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


class _ReadoutLoss:
    """Cross-entropy of a fixed random linear read-out of the final state."""

    def __init__(self, dim: int, classes: int, dtype: torch.dtype):
        generator = torch.Generator().manual_seed(2)
        self.weight = torch.randn(classes, dim, generator=generator, dtype=dtype) / dim ** 0.5

    def __call__(self, ys: Tensor, labels: Tensor) -> Tensor:
        logits = ys[-1] @ self.weight.to(ys.dtype).T
        return nn.functional.cross_entropy(logits, labels)


def digits_task(dtype: torch.dtype, pretrain_iterations: int, batch_size: int = 32) -> Task:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.as_tensor(images / 16.0, dtype=dtype)
    y = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(0)
    t = torch.tensor([0.0, 1.0], dtype=dtype)
    data = []
    for _ in range(16):
        index = torch.randint(0, len(x), (batch_size,), generator=generator)
        data.append((x[index], t, y[index]))
    torch.manual_seed(1)
    field = CountedFunc(DigitsField()).to(dtype)
    loss = _ReadoutLoss(64, 10, dtype)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-3)
    for i in range(pretrain_iterations):
        y0, tt, target = data[i % len(data)]
        optimizer.zero_grad()
        loss(odegrad.odeint(field, y0, tt, rtol=1e-5, atol=1e-7), target).backward()
        optimizer.step()
    return Task("digits", field, data, loss)


# ---- methods -----------------------------------------------------------------------------------

def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def odegrad_method(spec: str, method: str, rtol: float, atol: float) -> Method:
    backend = parse_backend(spec)

    def make(rtol, atol):
        def run(func, y0, t):
            solution = odegrad.solve(func, y0, t, method=method, gradient=backend, rtol=rtol, atol=atol)
            return solution.ys, solution.stats

        return run

    return Method(spec, make, rtol, atol)


def torchdiffeq_method(rtol: float, atol: float, seminorm: bool) -> Method:
    adjoint_options = {"norm": "seminorm"} if seminorm else None

    def make(rtol, atol):
        def run(func, y0, t):
            ys = torchdiffeq.odeint_adjoint(func, y0, t, rtol=rtol, atol=atol, method="dopri5",
                                            adjoint_options=adjoint_options)
            return ys, None

        return run

    return Method("tdq adjoint" + (" seminorm" if seminorm else ""), make, rtol, atol)


# ---- measurements ------------------------------------------------------------------------------

def gradient(task: Task, field: nn.Module, method: Method, batch) -> tuple[Tensor, Tensor, object]:
    y0, t, target = batch
    ys, stats = method.run(field, y0, t)
    grads = torch.autograd.grad(task.loss(ys, target), list(field.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]), ys, stats


def reference_gradient(task: Task) -> Tensor:
    field = copy.deepcopy(task.field).double()
    y0, t, target = task.batches[0]
    target = target.double() if target.is_floating_point() else target
    ys = odegrad.odeint(field, y0.double(), t.double(), gradient="direct",
                        rtol=REFERENCE_TOLERANCES[0], atol=REFERENCE_TOLERANCES[1])
    grads = torch.autograd.grad(task.loss(ys, target), list(field.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def static_measures(task: Task, method: Method, g_ref: Tensor) -> dict:
    """NFE, peak memory and gradient error of one iteration at the pretrained parameters."""
    field = copy.deepcopy(task.field)
    batch = task.batches[0]
    field.nfe = 0
    y0, t, target = batch
    ys, stats = method.run(field, y0, t)
    calls_forward = field.nfe
    loss = task.loss(ys, target)
    torch.autograd.grad(loss, list(field.parameters()))
    if stats is not None:
        nfe_f, nfe_b = stats.nfe_forward, stats.nfe_backward
    else:
        nfe_f, nfe_b = calls_forward, field.nfe - calls_forward
    g, _, _ = gradient(task, field, method, batch)
    error = float((g.double() - g_ref).norm() / g_ref.norm())

    def iteration():
        gradient(task, field, method, batch)

    return dict(nfe_f=nfe_f, nfe_b=nfe_b, memory=peak_tensor_mib(iteration), error=error)


def training_times(task: Task, methods: list[Method], repeats: int) -> list[float]:
    """Median seconds per training iteration of each method, each on its own copy of the field."""
    jobs = []
    for method in methods:
        field = copy.deepcopy(task.field)
        optimizer = torch.optim.Adam(field.parameters(), lr=1e-4)
        counter = iter(range(10 ** 9))

        def step(method=method, field=field, optimizer=optimizer, counter=counter):
            y0, t, target = task.batches[next(counter) % len(task.batches)]
            optimizer.zero_grad()
            ys, _ = method.run(field, y0, t)
            task.loss(ys, target).backward()
            optimizer.step()

        jobs.append(step)
    return paired_median_times(jobs, repeats)


def benchmark_task(task: Task, methods: list[Method], repeats: int) -> None:
    g_ref = reference_gradient(task)
    times = training_times(task, methods, repeats)
    rows = [static_measures(task, method, g_ref) for method in methods]
    base, base_time = rows[0], times[0]
    params = sum(p.numel() for p in task.field.parameters())
    for method, row, seconds in zip(methods, rows, times):
        print(f"| {task.name} ({params:,} params) | {method.name} | {seconds * 1e3:.1f} "
              f"| {ratio(seconds, base_time)} | {row['nfe_f']} | {row['nfe_b']} | {ratio(row['nfe_b'], base['nfe_b'])} "
              f"| {row['memory']:.3f} | {ratio(row['memory'], base['memory'])} "
              f"| {row['error']:.1e} | {ratio(row['error'], base['error'])} |", flush=True)


def memory_scaling(methods: list[Method], dtype: torch.dtype, pretrain_iterations: int,
                   tolerances: list[float], span: float = 5.0) -> None:
    """Peak memory of one iteration as tighter tolerances multiply the forward steps: mlp50 on one
    batch over a single segment [0, span] (200 points of the spiral), loss on y(span)."""
    task = spiral_task("mlp50", dtype, pretrain_iterations)
    y0, _, _ = task.batches[0]
    t = torch.tensor([0.0, span], dtype=dtype)
    target = torch.zeros(2, *y0.shape, dtype=dtype)
    task = Task(task.name, task.field, task.batches, lambda ys, _: ys[-1].pow(2).mean())
    print(f"\nPeak tensor memory (MiB) of one training iteration vs forward steps (mlp50, one batch, "
          f"t = [0, {span}]):")
    print("| rtol (atol = rtol/100) | forward steps | " + " | ".join(m.name for m in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for rtol in tolerances:
        steps = odegrad.solve(task.field, y0, t, rtol=rtol, atol=rtol / 100).stats.steps_accepted
        row = []
        for method in methods:
            scaled = Method(method.name, method.make, rtol, rtol / 100)
            row.append(peak_tensor_mib(lambda scaled=scaled: gradient(task, task.field, scaled, (y0, t, target))))
        print(f"| {rtol:.0e} | {steps} | " + " | ".join(f"{m:.3f}" for m in row) + " |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="gq,backsolve",
                        help="comma-separated odegrad backends, each a name or name(key=value, ...)")
    parser.add_argument("--models", default="mlp50,mlp512,digits")
    parser.add_argument("--method", default="dopri5", help="odegrad forward integrator")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-8)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pretrain", type=int, default=200, help="pretraining iterations per model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-seminorm", action="store_true", help="skip the torchdiffeq seminorm row")
    parser.add_argument("--scaling", action="store_true", help="also print peak memory vs forward steps")
    parser.add_argument("--quick", action="store_true", help="smoke run: mlp50 only, few repeats")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")  # pretrain()'s float(loss)
    if args.quick:
        args.models, args.repeats, args.pretrain = "mlp50", 3, 10
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    methods = [torchdiffeq_method(args.rtol, args.atol, seminorm=False)]
    if not args.no_seminorm:
        methods.append(torchdiffeq_method(args.rtol, args.atol, seminorm=True))
    methods += [odegrad_method(spec, args.method, args.rtol, args.atol) for spec in _split_top_level(args.backends)]
    print(f"adjoint benchmark: odegrad forward {args.method} vs torchdiffeq dopri5, rtol={args.rtol} "
          f"atol={args.atol} (forward and adjoint), {args.dtype}, {args.threads} thread(s), "
          f"median of {args.repeats}; ratios are against torchdiffeq odeint_adjoint")
    print("| model | method | train iter ms | time ratio | NFE fwd | NFE bwd | NFE bwd ratio "
          "| peak MiB | memory ratio | grad rel. error | error ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        task = digits_task(dtype, args.pretrain // 10) if name == "digits" else spiral_task(name, dtype, args.pretrain)
        benchmark_task(task, methods, args.repeats)
    if args.scaling:
        odegrad_methods = [odegrad_method("direct", "dopri5", args.rtol, args.atol), *methods]
        memory_scaling(odegrad_methods, dtype, args.pretrain, [1e-4, 1e-6, 1e-8, 1e-10])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
