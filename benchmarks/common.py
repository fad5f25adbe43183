"""Measurement helpers shared by the benchmark scripts (timing, NFE counting, peak memory)."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

import torch


class CountingField(torch.nn.Module):
    """Wraps a vector field ``net`` as ``func(t, y) = net(y)``-style module and counts calls."""

    def __init__(self, field: torch.nn.Module):
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.field(t, y)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


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


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"
