"""Measurement helpers shared by the benchmark scripts (timing, memory, ratios)."""

from __future__ import annotations

import ast
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq

import odegrad


def paired_median_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, run alternately (a, b, a, b, ...) so that load from other
    processes and CPU frequency drift affect all of them alike."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, samples):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in samples]


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def peak_memory_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory added while running ``fn()``, in MiB.

    Resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5), so the number is the
    high-water mark of this call alone above the memory resident before it: every tensor the
    solve and its backward pass keep alive at once, for CPU tensors. Linux only.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn()
    return max(_status_kib("VmHWM") - before, 0) / 1024


def saved_tensor_mib(fn: Callable[[], object]) -> float:
    """MiB of distinct tensor storage that autograd keeps for the backward pass while ``fn()``
    builds its graph (``saved_tensors_hooks``). This is the memory that grows with the number of
    solver steps under direct backprop and stays flat under adjoint methods; deterministic, unlike
    resident-set sizes, which the allocator's caching blurs for small problems."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values()) / 2 ** 20


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def peak_tensor_mib(fn: Callable[[], object]) -> float:
    """Peak tensor memory allocated on top of what existed before ``fn()``, in MiB: every tensor
    allocation and free the CPU allocator reports to the PyTorch profiler (``profile_memory=True``),
    summed in time order; the peak of that running sum is the most tensor memory alive at once.
    This counts tensor bytes exactly, unlike RSS (page granularity, allocator caching) or
    tracemalloc (which does not see PyTorch's allocator). Frees of blocks allocated before
    profiling started are not reported, so the peak can only err upwards, and only by tensors
    that existed before ``fn()``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        fn()
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak / 2 ** 20


# ---- the GPU-table problems (issue 19), shared by bench_memory.py and bench_gpu.py ---------------

class MLPField(torch.nn.Module):
    """``f(t, y) = MLP(y)`` with tanh between the layers, PyTorch's default initialisation.

    Args:
        dims: layer widths, e.g. ``(64, 512, 512, 64)``; ``dims[0] == dims[-1]`` is the state size.
    """

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        layers: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(torch.nn.Tanh())
        self.net = torch.nn.Sequential(*layers)

    def forward(self, t, y):
        return self.net(y)


@dataclass(frozen=True)
class ODEProblem:
    """One benchmark problem: a seeded MLP field, a batch of initial states and output times.
    ``loss(ys) = mean(ys²)`` over all outputs."""

    name: str
    dims: tuple[int, ...]
    batch: int
    t_end: float
    outputs: int
    rtol: float
    atol: float

    def make(self, device: str = "cpu", dtype: torch.dtype = torch.float32, batch: int | None = None
             ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        """``(field, y0 [batch, dims[0]], t [outputs])`` on ``device`` (``batch`` overrides the
        problem's batch size)."""
        torch.manual_seed(0)
        field = MLPField(self.dims).to(device=device, dtype=dtype)
        y0 = torch.randn(batch or self.batch, self.dims[0], device=device, dtype=dtype)
        t = torch.linspace(0.0, self.t_end, self.outputs, device=device, dtype=dtype)
        return field, y0, t


HORIZONS = (1, 10, 50, 200)
PROBLEMS = {
    "large": ODEProblem("MLP 64-512-512-64, 10 outputs on [0, 1]", (64, 512, 512, 64), 4096, 1.0, 10, 1e-5, 1e-7),
    **{f"T{T}": ODEProblem(f"MLP 32-256-256-32, t = [0, {T}]", (32, 256, 256, 32), 2048, float(T), 2, 1e-6, 1e-8)
       for T in HORIZONS},
}
"""Issue 19's problems (dopri5, float32): the large model ("large"), and the horizon sweep
"T1", "T10", "T50", "T200" (the issue's table has T = 1 and 50)."""


def _torchdiffeq(adjoint: bool):
    solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint

    def run(field, y0, t, rtol, atol):
        return solve(field, y0, t, rtol=rtol, atol=atol, method="dopri5")

    return run


def parse_backend(spec: str) -> odegrad.gradients.Backend:
    """``"gq"`` or ``"gq(nodes=8, rtol=1e-8)"``: a registered backend, optionally configured."""
    match = re.fullmatch(r"\s*([\w:-]+)\s*(?:\((.*)\))?\s*", spec)
    if match is None:
        raise SystemExit(f"cannot parse backend {spec!r}; expected name or name(key=value, ...)")
    backend = odegrad.get_backend(match.group(1))
    if not match.group(2):
        return backend
    call = ast.parse(f"f({match.group(2)})", mode="eval").body
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    return type(backend)(**kwargs)


def _odegrad(gradient, compiled: bool = False, cpp_wrapper: bool = False):
    def run(field, y0, t, rtol, atol):
        return odegrad.odeint(field, y0, t, rtol=rtol, atol=atol, method="dopri5", gradient=gradient)

    return torch.compile(run, fullgraph=True, options={"cpp_wrapper": cpp_wrapper}) if compiled else run


_BACKENDS: dict[str, Callable[[], str | odegrad.gradients.Backend]] = {
    "direct": lambda: "direct",
    "backsolve": lambda: odegrad.gradients.Backsolve(on_drift="warn"),
    "gq": lambda: odegrad.gradients.GaussQuadrature(on_drift="warn"),
    "interp": lambda: "interp",
}

METHODS: dict[str, Callable[..., Callable]] = {
    "tdq direct": lambda: _torchdiffeq(False),
    "tdq adjoint": lambda: _torchdiffeq(True),
    **{name: (lambda name=name: _odegrad(_BACKENDS[name]())) for name in _BACKENDS},
}
"""Method name → factory of ``run(field, y0, t, rtol, atol) -> ys`` (dopri5 everywhere). backsolve
and gq warn instead of raising when the reverse solve misses the forward states: at T = 50 the
fields' Jacobian eigenvalues (real parts ±0.15) amplify errors by e^7.5 in either direction, so
their gradients are off there, but what they cost in time and memory is what is measured."""


COMPILED_METHODS: dict[str, Callable[..., Callable]] = {
    f"{name} compiled": (lambda name=name: _odegrad(_BACKENDS[name](), compiled=True)) for name in _BACKENDS
}
"""The odegrad methods under ``torch.compile(fullgraph=True)`` (inductor): the traced driver forward
and, for the adjoint backends, one traced backward sweep. The first call compiles."""

CPP_WRAPPER_METHODS: dict[str, Callable[..., Callable]] = {
    f"{name} compiled, C++ wrapper": (lambda name=name: _odegrad(_BACKENDS[name](), compiled=True, cpp_wrapper=True))
    for name in _BACKENDS if name != "direct"
}
"""The adjoint backends compiled as :data:`COMPILED_METHODS` with inductor's C++ wrapper
(``options={"cpp_wrapper": True}``: no Python between the loop's kernels). ``direct`` has none:
inductor cannot wrap ``while_loop``'s autograd in C++ (torch 2.13)."""


def make_method(spec: str) -> Callable:
    """``run(field, y0, t, rtol, atol) -> ys`` for a :data:`METHODS`, :data:`COMPILED_METHODS` or
    :data:`CPP_WRAPPER_METHODS` name or an odegrad backend spec such as ``"gq(nodes=16)"``."""
    if spec in METHODS:
        return METHODS[spec]()
    compiled = {**COMPILED_METHODS, **CPP_WRAPPER_METHODS}
    return compiled[spec]() if spec in compiled else _odegrad(parse_backend(spec))


def train_iteration(problem: ODEProblem, method: str, field, y0, t) -> Callable[[], None]:
    """One forward + backward pass of ``mean(ys²)`` (gradients into ``field``'s parameters) with
    ``method`` (see :func:`make_method`), finished on the device when ``y0`` is on CUDA (so it
    can be timed)."""
    run = make_method(method)

    def iteration():
        field.zero_grad(set_to_none=True)
        run(field, y0, t, problem.rtol, problem.atol).square().mean().backward()
        if y0.is_cuda:
            torch.cuda.synchronize()

    return iteration
