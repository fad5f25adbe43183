"""Timing and side-by-side serving: exported model (onnxruntime / TorchScript) vs eager PyTorch.

:func:`serve_and_compare` is what ``odegrad demo`` ends with: export to ONNX, serve with
onnxruntime, report parity and the latency ratio against eager PyTorch.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from odegrad._checks import check_int

from ._graph import eval_mode
from ._onnx import to_onnx
from ._runtime import OnnxModel
from ._validation import Parity, Tolerance, compare, resized_batch, to_numpy


@dataclass(frozen=True)
class Latency:
    """Wall-clock seconds per call over ``repeats`` timed calls (after warm-up).

    Attributes:
        median: median seconds per call.
        p90: 90th-percentile seconds per call.
        repeats: number of timed calls.
        batch: batch size of each call (for ``throughput``).
    """

    median: float
    p90: float
    repeats: int
    batch: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / self.median


def measure_latency(fn: Callable[[], Any], batch: int, *, repeats: int = 50, warmup: int = 5,
                    budget_s: float = 2.0) -> Latency:
    """Time ``fn()``; stops early (after at least 5 timed calls) once ``budget_s`` is spent.

    Args:
        fn: the call to time (no arguments).
        batch: the batch size one call processes (recorded for ``Latency.throughput``).
        repeats: most timed calls.
        warmup: untimed calls first.
        budget_s: seconds after which timing stops early.

    Raises:
        InvalidInput: ``repeats`` is not a positive integer.
    """
    repeats = check_int("repeats", repeats, low=1)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return Latency(statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], len(times), batch)


def measure_paired(fns: Sequence[Callable[[], Any]], batch: int, *, repeats: int = 50, warmup: int = 3,
                   budget_s: float = 4.0) -> list[Latency]:
    """Time several functions alternately (a, b, a, b, ...) so background load and frequency
    drift hit them alike; stops early (after at least 5 rounds) once ``budget_s`` is spent.

    Args:
        fns: the calls to time (no arguments each).
        batch: the batch size one call processes.
        repeats: most timed rounds (one call of each function per round).
        warmup: untimed calls of each function first.
        budget_s: seconds after which timing stops early.

    Returns:
        One :class:`Latency` per function, in the order of ``fns``.
    """
    repeats = check_int("repeats", repeats, low=1)
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(samples[0]) < repeats and (len(samples[0]) < 5 or time.perf_counter() - start < budget_s):
        for fn, bucket in zip(fns, samples):
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    out = []
    for bucket in samples:
        bucket.sort()
        out.append(Latency(statistics.median(bucket), bucket[min(len(bucket) - 1, int(0.9 * len(bucket)))],
                           len(bucket), batch))
    return out


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(check_int("threads", threads, low=1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def eager_call(model: nn.Module, x: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with torch.no_grad():
            return model(x)

    return run


@dataclass
class ServeRow:
    """One batch size of a :class:`ServeReport`: eager and onnxruntime latency and their parity."""

    batch: int
    eager: Latency
    onnxruntime: Latency
    parity: Parity

    @property
    def ratio(self) -> float:
        """onnxruntime latency / eager PyTorch latency (below 1: onnxruntime is faster)."""
        return self.onnxruntime.median / self.eager.median


@dataclass
class ServeReport:
    """Parity and latency of an ONNX export served by onnxruntime against eager PyTorch.

    Attributes:
        path: the ``.onnx`` file (None when it was a temporary file).
        providers: the onnxruntime providers used.
        rows: one row per batch size: ``batch``, ``eager`` and ``onnxruntime`` :class:`Latency`,
            ``parity`` and ``ratio`` (onnxruntime / eager median latency).
        metadata: the metadata written into the file.
    """

    path: Path | None  # None when the file was temporary
    providers: list[str]
    rows: list[ServeRow] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every batch size's onnxruntime output matched eager PyTorch within the tolerance."""
        return all(row.parity.ok for row in self.rows)

    def __str__(self) -> str:
        kind = self.metadata.get("odegrad.kind", "model")
        details = ", ".join(f"{k.removeprefix('odegrad.')}={self.metadata[k]}"
                            for k in ("odegrad.method", "odegrad.order", "odegrad.steps") if k in self.metadata)
        lines = [f"ONNX export of the {kind} ({details}) served by onnxruntime [{', '.join(self.providers)}]",
                 f"{'batch':>6} {'eager ms':>10} {'onnxrt ms':>10} {'ratio':>7} {'max |diff|':>11}  parity"]
        for row in self.rows:
            verdict = "ok" if row.parity.ok else "MISMATCH"
            lines.append(f"{row.batch:>6} {row.eager.median * 1e3:>10.3f} {row.onnxruntime.median * 1e3:>10.3f} "
                         f"{row.ratio:>6.3f}x {row.parity.max_abs_diff:>11.3g}  {verdict}")
        return "\n".join(lines)


def serve_and_compare(model: nn.Module, example_input: Tensor, *, path: str | Path | None = None,
                      batch_sizes: Sequence[int] = (1, 256), providers: str | Sequence[str] = "auto",
                      repeats: int = 50, threads: int | None = None, atol: float | None = None,
                      rtol: float | None = None) -> ServeReport:
    """Export ``model`` to ONNX (dynamic batch), serve it with onnxruntime and compare it with
    eager PyTorch at each batch size: max abs difference and median latency ratio.

    Args:
        model: a fixed-cost model (TLNODE, fixed-step NeuralODE, ...).
        example_input: ``Tensor[batch, *state]``; inputs at other batch sizes cycle its rows.
        path: where to write the ``.onnx`` file (None: a temporary file, deleted afterwards).
        batch_sizes: batch sizes to time.
        providers: onnxruntime providers, as for :class:`OnnxModel`.
        repeats: timed calls per measurement (eager and onnxruntime calls alternate).
        threads: intra-op threads for both PyTorch and onnxruntime while timing (None: each
            library's default; 1 gives steadier numbers on a small shared machine).
        atol, rtol: parity tolerance (defaults depend on the dtype).

    Returns:
        :class:`ServeReport`; ``str(report)`` is a small table.
    """
    sizes = [check_int("batch_sizes[i]", b, low=1) for b in batch_sizes]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path is not None else Path(tmp) / "model.onnx"
        result = to_onnx(model, example_input, target, atol=atol, rtol=rtol)
        served = OnnxModel(target, providers=providers, threads=threads)
        tolerance = Tolerance.for_dtype(example_input.dtype, atol, rtol)
        rows = []
        with eval_mode(model), torch_threads(threads):
            for batch in sizes:
                x = resized_batch(example_input.detach(), batch)
                x_np = np.ascontiguousarray(to_numpy(x))
                eager = eager_call(model, x)
                parity = compare(eager(), served(x_np), tolerance)
                timed = measure_paired([eager, lambda x_np=x_np: served.run(x_np)], batch, repeats=repeats)
                rows.append(ServeRow(batch, timed[0], timed[1], parity))
        return ServeReport(result.path if path is not None else None, served.providers, rows, result.metadata)
