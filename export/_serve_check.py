"""``serve-check``: run an exported file (ONNX through onnxruntime, or TorchScript) on random
input, time it, and check parity against the probe recorded at export and, optionally, against
the PyTorch model it came from."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odegrad._checks import check_int
from odegrad.errors import ExportError

from ._files import existing_file
from ._runtime import OnnxModel
from ._serving import Latency, eager_call, measure_latency, measure_paired, torch_threads
from ._torchscript import load_torchscript
from ._validation import Parity, Tolerance, compare

_NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


@dataclass
class CheckRow:
    """One batch size of a :class:`CheckReport`: the file's latency and, when a model was given,
    eager PyTorch's latency and the parity against it."""

    batch: int
    latency: Latency
    eager: Latency | None = None
    parity: Parity | None = None  # against the PyTorch model, when one was given


@dataclass
class CheckReport:
    """What :func:`check_exported` (``odegrad serve-check``) found; ``str(report)`` is a table.

    Attributes:
        path: the file checked.
        format: ``"onnx"`` or ``"torchscript"``.
        runtime: what ran it (onnxruntime with its providers, or ``torch.jit``).
        input_shape: the input shape, ``"batch"`` for a dynamic batch dimension.
        dtype: the input dtype name (e.g. ``"float32"``).
        metadata: the ``odegrad.*`` metadata stored in the file.
        probe: parity with the PyTorch output recorded in the file at export (None without a probe).
        rows: one row per batch size: ``batch``, ``latency``, and with a model ``eager`` and ``parity``.
    """

    path: Path
    format: str
    runtime: str
    input_shape: list[Any]
    dtype: str
    metadata: dict[str, Any]
    probe: Parity | None
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The probe and every parity against the model (those present) are within tolerance."""
        parities = [self.probe] + [row.parity for row in self.rows]
        return all(p.ok for p in parities if p is not None)

    def __str__(self) -> str:
        meta = ", ".join(f"{k.removeprefix('odegrad.')}={self.metadata[k]}" for k in
                         ("odegrad.kind", "odegrad.method", "odegrad.order", "odegrad.steps", "odegrad.version")
                         if k in self.metadata)
        lines = [f"{self.path}: {self.format} model, input {self.input_shape} {self.dtype}, run by {self.runtime}",
                 f"metadata: {meta or 'none (not exported by odegrad)'}",
                 f"parity with the PyTorch output recorded at export: {self.probe or 'no probe recorded'}"]
        with_eager = any(row.eager is not None for row in self.rows)
        header = f"{'batch':>6} {'median ms':>10} {'p90 ms':>9} {'samples/s':>11}"
        if with_eager:
            header += f" {'eager ms':>9} {'ratio':>7}  parity vs PyTorch"
        lines.append(header)
        for row in self.rows:
            line = (f"{row.batch:>6} {row.latency.median * 1e3:>10.3f} {row.latency.p90 * 1e3:>9.3f} "
                    f"{row.latency.throughput:>11.0f}")
            if row.eager is not None:
                line += f" {row.eager.median * 1e3:>9.3f} {row.latency.median / row.eager.median:>6.3f}x  {row.parity}"
            lines.append(line)
        lines.append("parity: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _load(path: Path, providers: str | Sequence[str],
          threads: int | None) -> tuple[str, str, Callable, list[Any], str, dict[str, Any]]:
    """(format, runtime name, numpy->numpy callable, input shape with "batch", dtype, metadata)."""
    if _is_zip(path):
        module, meta = load_torchscript(path)
        try:
            inputs = json.loads(meta["odegrad.inputs"]) if "odegrad.inputs" in meta else None
        except (json.JSONDecodeError, TypeError, RecursionError) as error:
            raise ExportError(f"{path} has corrupted odegrad metadata: odegrad.inputs is not readable JSON "
                              f"({type(error).__name__})") from None
        if not inputs:
            raise ExportError(f"{path} is a TorchScript archive without odegrad metadata (or a file saved with "
                              "torch.save); serve-check needs a file written by odegrad export")
        shape = inputs[0].get("shape") if isinstance(inputs, list) and isinstance(inputs[0], dict) else None
        if not isinstance(shape, list) or not all(d == "batch" or (type(d) is int and 0 < d <= 2 ** 20)
                                                  for d in shape):
            raise ExportError(f"{path} has corrupted odegrad metadata: the input shape {str(shape)[:60]} is "
                              "not a list of sizes (positive integers or 'batch')")

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        return "torchscript", "torch.jit", run, inputs[0]["shape"], inputs[0]["dtype"], meta
    served = OnnxModel(path, providers=providers, threads=threads)
    shape = ["batch" if d is None else d for d in served.input_shape]
    return ("onnx", f"onnxruntime [{', '.join(served.providers)}]", lambda x: served.run(x)[0], shape,
            str(served.dtype), served.metadata)


def _probe_parity(meta: dict[str, Any], run: Callable, dtype: str) -> Parity | None:
    if "odegrad.probe" not in meta:
        return None
    try:
        probe = json.loads(meta["odegrad.probe"])
        x = np.asarray(probe["input"], dtype=_NUMPY_DTYPES[dtype])
        expected = np.asarray(probe["output"])
        tolerance = Tolerance(float(probe["atol"]), float(probe["rtol"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"the probe recorded in the file is corrupted: {error}") from error
    return compare(expected, run(x), tolerance)


def check_exported(path: str | os.PathLike, *, batch_sizes: Sequence[int] = (1, 256),
                   providers: str | Sequence[str] = "auto", repeats: int = 50, seed: int = 0,
                   model: nn.Module | None = None, threads: int | None = None) -> CheckReport:
    """Run an exported file on random standard-normal input at each batch size.

    Args:
        path: an ``.onnx`` file or a TorchScript archive written by :mod:`odegrad.export`.
        batch_sizes: batch sizes to time (the file's fixed batch size if it has one).
        providers: onnxruntime providers for ONNX files.
        repeats: timed calls per batch size.
        seed: seed of the random inputs.
        model: the PyTorch model the file came from; adds eager latency and parity columns.
        threads: intra-op threads for onnxruntime and torch (None: the libraries' defaults).
    """
    source = existing_file(path, "an exported .onnx or TorchScript file")
    with torch_threads(threads):
        return _check(source, batch_sizes, providers, repeats, seed, model, threads)


def _check(source: Path, batch_sizes: Sequence[int], providers: str | Sequence[str], repeats: int, seed: int,
           model: nn.Module | None, threads: int | None) -> CheckReport:
    fmt, runtime, run, shape, dtype, meta = _load(source, providers, threads)
    if dtype not in _NUMPY_DTYPES:
        raise ExportError(f"{source} takes {dtype} input, which serve-check does not generate")
    report = CheckReport(source, fmt, runtime, shape, dtype, meta, _probe_parity(meta, run, dtype))
    generator = np.random.default_rng(seed)
    sizes = [check_int("batch size", b, low=1) for b in batch_sizes]
    if shape and shape[0] != "batch":
        sizes = [int(shape[0])]
    for batch in sizes:
        concrete = [batch if d == "batch" else int(d) for d in shape]
        x = generator.standard_normal(concrete).astype(_NUMPY_DTYPES[dtype])
        served = lambda x=x: run(x)
        if model is None:
            report.rows.append(CheckRow(batch, measure_latency(served, batch, repeats=repeats)))
            continue
        eager = eager_call(model, torch.from_numpy(x))
        expected = eager()
        parity = compare(expected, served(), Tolerance.for_dtype(expected.dtype))
        latency, eager_latency = measure_paired([served, eager], batch, repeats=repeats)
        report.rows.append(CheckRow(batch, latency, eager_latency, parity))
    return report
