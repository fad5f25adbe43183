"""``to_onnx``: fixed-cost model -> validated ONNX file (torch.export + the dynamo ONNX exporter)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx_ir.passes.common import RemoveUnusedNodesPass
from torch import nn

from odegrad._checks import check_int
from odegrad.errors import ExportError, InvalidInput, OdegradError

from ._common import ExportResult, build_metadata, prepare_job, record_solves
from ._files import atomic_write, output_path
from ._graph import export_program, inference_module
from ._precision import TRANSLATIONS
from ._runtime import GRAPH_CHECKSUM, OnnxModel, graph_checksum, load_onnx
from ._validation import require_parity, to_numpy

MIN_OPSET = 18  # the dynamo exporter emits opset 18 and later


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress to stdout and warns about unrelated optional packages."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        registration.setLevel(level)


def _check_opset(opset: Any) -> int | None:
    if opset is None:
        return None
    return check_int("opset", opset, low=MIN_OPSET)


def to_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *,
            dynamic_batch: bool = True, opset: int | None = None, atol: float | None = None,
            rtol: float | None = None, input_name: str = "input", output_name: str = "output") -> ExportResult:
    """Export a model (TLNODE, NeuralODE blocks, plain layers) to ONNX.

    Args:
        model: the model; fixed-step NeuralODE blocks are unrolled, dopri5/tsit5/bosh3 ones keep
            their step-size control as an ONNX ``Loop`` (bounded by ``max_steps``; output times it
            does not reach are NaN where PyTorch raises), other adaptive ones are refused with
            :class:`~odegrad.errors.ExportError`.
        example_input: ``Tensor[batch, *state]`` in the dtype to export (float32 or float64).
        path: file to write; written atomically, only after validation passes.
        dynamic_batch: make dimension 0 of the input (and the matching output dimension) dynamic.
        opset: ONNX opset (None: the exporter's default; at least 18).
        atol, rtol: parity tolerance against PyTorch (defaults depend on the dtype, see
            :meth:`odegrad.export.Tolerance.for_dtype`).

    The file is checked with ``onnx.checker`` and run by onnxruntime (CPU) on the example input
    and, with ``dynamic_batch``, at a second batch size; both must match eager PyTorch.

    Returns:
        :class:`ExportResult` with the path, the parity on the example input and the metadata.
    """
    opset = _check_opset(opset)
    for name, value in (("input_name", input_name), ("output_name", output_name)):
        if not isinstance(value, str) or not value:
            raise InvalidInput(name, value, "a non-empty string")
    if input_name == output_name:
        raise InvalidInput("output_name", output_name, f"a name other than input_name ({input_name!r}): an "
                           "ONNX graph's input and output values need distinct names")
    output_path(path)  # an unwritable target fails now, not after the export
    job = prepare_job(model, example_input, dynamic_batch=dynamic_batch, atol=atol, rtol=rtol)
    with inference_module(model, adaptive=True) as module:
        static = record_solves(module, job)
        with static.replay():
            program = export_program(module, job.traced_example, dynamic_batch)
        try:
            with _quiet_exporter():
                onnx_program = torch.onnx.export(program, (job.traced_example,), dynamo=True,
                                                 input_names=[input_name], output_names=[output_name],
                                                 opset_version=opset, optimize=True,
                                                 custom_translation_table=TRANSLATIONS)
        except OdegradError:
            raise
        except Exception as error:
            raise ExportError(f"the ONNX exporter cannot translate the model: {type(error).__name__}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from error
    # the optimizer leaves folded constants unused (onnxruntime warns about each when loading)
    RemoveUnusedNodesPass()(onnx_program.model)
    proto = onnx_program.model_proto
    meta = build_metadata(job, input_name, output_name)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"odegrad {meta['odegrad.kind']} model exported with torch {torch.__version__}"
    meta[GRAPH_CHECKSUM] = graph_checksum(proto)
    proto.metadata_props.add(key=GRAPH_CHECKSUM, value=meta[GRAPH_CHECKSUM])
    if proto.ByteSize() >= 2**31 - 1:
        raise ExportError("the model is larger than 2 GiB, the limit of a single-file ONNX model")
    with atomic_write(path) as tmp:
        onnx.save(proto, str(tmp))
        load_onnx(tmp)
        session = OnnxModel(tmp, providers="cpu")
        parities = [require_parity(expected, session(to_numpy(x)), job.tolerance,
                                   f"onnxruntime on the exported graph (batch {x.shape[0] if x.dim() else 1})")
                    for x, expected in zip(job.examples, job.expected)]
    return ExportResult(path=Path(path), format="onnx", parity=parities[0], metadata=meta)
