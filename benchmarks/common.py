"""Measurement helpers shared by the benchmark scripts (timing, memory, ratios)."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

import torch


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
