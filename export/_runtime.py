"""Serving exported ONNX files with onnxruntime: provider choice and :class:`OnnxModel`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor

from odegrad._checks import check_int
from odegrad.errors import ExportError, InvalidInput, UnsupportedCombination

from ._files import existing_file

GRAPH_CHECKSUM = "odegrad.graph_sha256"
_PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32,
}


def choose_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Execution providers for a session.

    ``"auto"``: CUDA when onnxruntime-gpu is installed and sees a GPU, then CPU; ``"cpu"`` or
    ``"cuda"``; or an explicit list of provider names (each must be available).
    """
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        if key not in _PROVIDER_ALIASES:
            raise InvalidInput("providers", providers, "'auto', 'cpu', 'cuda' or a list of provider names")
        providers = [_PROVIDER_ALIASES[key]]
        if key == "cuda":
            providers.append("CPUExecutionProvider")
    if not isinstance(providers, (list, tuple)) or not providers or not all(isinstance(p, str) for p in providers):
        raise InvalidInput("providers", providers, "'auto', 'cpu', 'cuda' or a non-empty list of provider names")
    missing = [p for p in providers if p not in available]
    if missing:
        hint = " (install onnxruntime-gpu and check the CUDA driver)" if "CUDAExecutionProvider" in missing else ""
        raise UnsupportedCombination(f"execution provider(s) {', '.join(missing)} not available in this "
                                     f"onnxruntime; available: {', '.join(available)}{hint}")
    return list(providers)


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file; a truncated or corrupted file raises :class:`ExportError`."""
    source = existing_file(path, "an ONNX model")
    try:
        model = onnx.load(str(source))
    except Exception as error:  # protobuf raises DecodeError, onnx raises ValidationError/OSError
        raise ExportError(f"{source} is not a readable ONNX model (truncated or corrupted?): "
                          f"{type(error).__name__}: {error}") from error
    check_onnx(model, source)
    return model


def graph_checksum(model: onnx.ModelProto) -> str:
    """SHA-256 of the serialized graph (nodes and weights), recorded at export so that a file
    whose weights were damaged — still a well-formed ONNX model — is caught when it is opened."""
    return hashlib.sha256(model.graph.SerializeToString()).hexdigest()


def check_onnx(model: onnx.ModelProto, source: Any) -> None:
    if not model.graph.node or not model.graph.output:
        raise ExportError(f"{source} is not a valid ONNX model (truncated or corrupted?): it has no graph "
                          f"nodes or outputs")
    recorded = metadata(model).get(GRAPH_CHECKSUM)
    if recorded is not None and recorded != graph_checksum(model):
        raise ExportError(f"{source} is corrupted (truncated or corrupted?): its graph does not match the "
                          f"SHA-256 checksum recorded at export")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:
        raise ExportError(f"{source} fails onnx.checker (truncated or corrupted?): {error}") from error


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


class OnnxModel:
    """An onnxruntime session over an exported odegrad model.

    Args:
        path: the ``.onnx`` file (checked with ``onnx.checker`` when opened).
        providers: ``"auto"`` (CUDA with onnxruntime-gpu and a GPU, else CPU), ``"cpu"``,
            ``"cuda"`` or a list of onnxruntime provider names.
        threads: intra-op threads (None: onnxruntime's default).

    Raises:
        ExportError: the file is not a valid ONNX model, onnxruntime cannot load it, or it has
            more than one input or an input dtype OnnxModel does not serve.

    Calling it with ``x: ndarray | Tensor[batch, *state]`` returns the output in the same kind
    (a torch input gives a torch output on the input's device).
    """

    def __init__(self, path: str | os.PathLike, providers: str | Sequence[str] = "auto", *,
                 threads: int | None = None):
        model = load_onnx(path)
        self.path = Path(path)
        self.metadata = metadata(model)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = check_int("threads", threads, low=1)
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options,
                                                providers=choose_providers(providers))
        except (InvalidInput, UnsupportedCombination):
            raise
        except Exception as error:
            hint = (" (onnxruntime's CPU kernels do not cover this operator in this dtype; export in "
                    "float32, which every operator supports)" if "NOT_IMPLEMENTED" in str(error) else "")
            raise ExportError(f"onnxruntime cannot load {self.path}: {error}{hint}") from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ExportError(f"{self.path} has {len(inputs)} inputs; OnnxModel serves single-input models")
        self.input_name = inputs[0].name
        self.input_shape: tuple[int | None, ...] = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        if inputs[0].type not in _ORT_DTYPES:
            raise ExportError(f"{self.path} takes {inputs[0].type}, which OnnxModel does not serve")
        self.dtype = np.dtype(_ORT_DTYPES[inputs[0].type])
        self.output_names = [o.name for o in self.session.get_outputs()]
        axis = self.metadata.get("odegrad.output_batch_axis", "0")
        if not axis.isdigit() or int(axis) >= 16:
            raise ExportError(f"{self.path} has corrupted odegrad metadata: odegrad.output_batch_axis is "
                              f"{axis[:40]!r}; expected a small non-negative integer")
        self.output_batch_axis = int(axis)

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers the session uses, in priority order."""
        return self.session.get_providers()

    @property
    def dynamic_batch(self) -> bool:
        """Whether the model's input takes any batch size (its first dimension is symbolic)."""
        return bool(self.input_shape) and self.input_shape[0] is None

    def info(self) -> dict[str, Any]:
        """The odegrad metadata recorded at export (version, method, order, steps, shapes)."""
        out = dict(self.metadata)
        for key in ("odegrad.inputs", "odegrad.outputs"):
            if key in out:
                try:
                    out[key] = json.loads(out[key])
                except (json.JSONDecodeError, RecursionError) as error:
                    raise ExportError(f"{self.path} has corrupted odegrad metadata: {key} is not readable "
                                      f"JSON ({type(error).__name__})") from None
        return out

    def _check(self, x: np.ndarray) -> None:
        if x.dtype != self.dtype:
            raise InvalidInput("input dtype", str(x.dtype), f"{self.dtype} (the exported model's input dtype)",
                               hint=f"cast it first, e.g. x.astype(np.{self.dtype}) or x.to(torch.{self.dtype})")
        shape_text = "[" + ", ".join("batch" if d is None else str(d) for d in self.input_shape) + "]"
        if x.ndim != len(self.input_shape) or any(d is not None and d != n for d, n in zip(self.input_shape, x.shape)):
            raise InvalidInput("input shape", str(tuple(x.shape)), f"{shape_text} (the exported model's input shape)")
        if x.size == 0:
            raise InvalidInput("input shape", str(tuple(x.shape)), "a non-empty batch")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """All outputs for a numpy input (shape and dtype checked)."""
        x = np.ascontiguousarray(x)
        self._check(x)
        return self.session.run(self.output_names, {self.input_name: x})

    def __call__(self, x: np.ndarray | Tensor) -> np.ndarray | Tensor:
        if isinstance(x, Tensor):
            out = self.run(x.detach().cpu().numpy())[0]
            return torch.from_numpy(out).to(x.device)
        if not isinstance(x, np.ndarray):
            raise InvalidInput("input", type(x).__name__, "a numpy array or a torch.Tensor")
        return self.run(x)[0]

    def predict(self, x: np.ndarray | Tensor, batch_size: int = 256) -> np.ndarray | Tensor:
        """Run a large batch in chunks of ``batch_size`` rows (the last chunk is padded when the
        model was exported with a fixed batch size) and concatenate the results along the
        output's batch axis (recorded at export; 1 for trajectories ``[T, batch, *state]``)."""
        batch_size = check_int("batch_size", batch_size, low=1)
        is_tensor = isinstance(x, Tensor)
        array = x.detach().cpu().numpy() if is_tensor else x
        if not isinstance(array, np.ndarray) or array.ndim == 0:
            raise InvalidInput("input", type(x).__name__, "a numpy array or torch.Tensor with a batch dimension")
        if array.shape[0] == 0:
            raise InvalidInput("input shape", str(tuple(array.shape)), "a non-empty batch (at least one row)")
        if not self.dynamic_batch:
            batch_size = self.input_shape[0]
        chunks = []
        for start in range(0, array.shape[0], batch_size):
            chunk = array[start:start + batch_size]
            rows = chunk.shape[0]
            if rows < batch_size and not self.dynamic_batch:
                pad = np.repeat(chunk[-1:], batch_size - rows, axis=0)
                chunk = np.concatenate([chunk, pad])
            chunks.append(np.take(self.run(chunk)[0], np.arange(rows), axis=self.output_batch_axis))
        out = np.concatenate(chunks, axis=self.output_batch_axis)
        return torch.from_numpy(out).to(x.device) if is_tensor else out
