"""What both exporters share: checking the arguments, PyTorch reference outputs at two batch
sizes, the metadata written into the file, and the result object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from odegrad.errors import ExportError, InvalidInput, OdegradError
from odegrad.solvers import StaticTimes

from ._graph import GraphInfo, check_example, describe, eval_mode, trace_example, with_solves
from ._validation import Parity, Tolerance, resized_batch

_PROBE_LIMIT = 4096  # largest probe (elements) stored in the file for `odegrad serve-check`


@dataclass
class ExportJob:
    """A checked export request with its PyTorch reference outputs.

    ``examples[i]`` and ``expected[i]`` are the validation inputs (the user's example and, with a
    batch dimension, the same rows at another batch size) and PyTorch's outputs on them.
    """

    example: Tensor
    traced_example: Tensor
    examples: list[Tensor]
    expected: list[Tensor]
    tolerance: Tolerance
    info: GraphInfo
    dynamic_batch: bool
    output_batch_axis: int | None


@dataclass
class ExportResult:
    """A written, validated export (what ``to_onnx`` / ``to_torchscript`` return).

    Attributes:
        path: the file written.
        format: ``"onnx"`` or ``"torchscript"``.
        parity: the exported graph's agreement with PyTorch on the example input.
        metadata: the ``odegrad.*`` metadata stored in the file (version, kind, method, order,
            steps, input/output shapes, probe).
    """

    path: Path
    format: str
    parity: Parity
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"wrote {self.format} model {self.path}; parity with PyTorch: {self.parity}"


def _single_output(out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise ExportError(f"the model returns {type(out).__name__}; export supports models returning one Tensor")
    return out.detach()


def _batch_axis(out_a: Tensor, out_b: Tensor) -> int | None:
    axes = [i for i, (a, b) in enumerate(zip(out_a.shape, out_b.shape)) if a != b]
    return axes[0] if len(axes) == 1 and out_a.dim() == out_b.dim() else None


def _static_batch_axis(model: nn.Module, example: Tensor, out: Tensor) -> int | None:
    """The output's batch axis for a static-batch export (used by ``OnnxModel.predict`` to pad
    and join chunks): found by running another batch size, else the first axis of that size."""
    if example.dim() == 0:
        return None
    try:
        with eval_mode(model), torch.no_grad():
            other = _single_output(model(resized_batch(example, example.shape[0] + 1)))
        return _batch_axis(out, other)
    except Exception:  # a model that only works at this batch size
        return next((i for i, n in enumerate(out.shape) if n == example.shape[0]), None)


def _reference_call(model: nn.Module, x: Tensor) -> Any:
    """``model(x)`` in eager PyTorch, the reference the export must match; a model that cannot
    run on the example is an ExportError naming the example, not a stack trace from inside it."""
    try:
        return model(x)
    except InvalidInput as error:  # an odeint inside the model refused what this input led to
        raise InvalidInput("example_input", f"a tensor of shape {tuple(x.shape)}", "an input the model "
                           "accepts, Tensor[batch, *state]", hint=f"running the model on it raised: {error}") from error
    except OdegradError:
        raise
    except Exception as error:  # whatever the user's model raises on this input
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ExportError(f"the model raised on example_input of shape {tuple(x.shape)} "
                          f"({type(error).__name__}: {first_line}); pass an input the model accepts") from error


def prepare_job(model: nn.Module, example_input: Any, *, dynamic_batch: bool, atol: float | None,
                rtol: float | None) -> ExportJob:
    if not isinstance(model, nn.Module):
        raise InvalidInput("model", type(model).__name__, "a torch.nn.Module")
    if not isinstance(dynamic_batch, bool):
        raise InvalidInput("dynamic_batch", dynamic_batch, "True or False")
    example = check_example(example_input, dynamic_batch)
    tolerance = Tolerance.for_dtype(example.dtype, atol, rtol)
    info = describe(model)  # refuses adaptive/unsupported ODE blocks before any work
    examples = [example, resized_batch(example, example.shape[0] + 3)] if dynamic_batch else [example]
    with eval_mode(model), torch.no_grad():
        expected = [_single_output(_reference_call(model, x)) for x in examples]
    if dynamic_batch:
        axis = _batch_axis(expected[0], expected[1])
        if axis is None:
            raise ExportError("dynamic_batch=True but the model's output does not follow the batch size of "
                              f"its input (output shapes {tuple(expected[0].shape)} and "
                              f"{tuple(expected[1].shape)} for batch sizes {example.shape[0]} and "
                              f"{examples[1].shape[0]}); export with dynamic_batch=False")
    else:
        axis = _static_batch_axis(model, example, expected[0])
    return ExportJob(example, trace_example(example, dynamic_batch), examples, expected, tolerance, info,
                     dynamic_batch, axis)


def record_solves(module: nn.Module, job: ExportJob) -> StaticTimes:
    """Run the inference ``module`` eagerly on the validation inputs with the output times of
    every ``odeint`` call inside it read once (:class:`~odegrad.solvers.StaticTimes`); trace it
    under ``replay()`` so those solves unroll. The solves are added to ``job.info``.

    Raises:
        ExportError: a solve uses an adaptive method, events or dense output, or its times are
            computed from the input (they differ between the inputs, or depend on them through autograd).
    """
    static = StaticTimes()
    for x in job.examples:
        leaf = x.clone().requires_grad_(True)  # what the times must not depend on
        with torch.enable_grad(), static.record(leaf):
            _reference_call(module, leaf.clone())  # a non-leaf copy: the model may change its input in place
    _record_probe(static, module, job.example)
    job.info = with_solves(job.info, static.solves)
    return static


def _record_probe(static: StaticTimes, module: nn.Module, example: Tensor) -> None:
    """One more recording pass, on the example perturbed at random (seeded): output times read off
    the input's values — even detached, which autograd cannot see — differ there, and the
    recording refuses them. A model that fails on the perturbed input (outside its domain) leaves
    the check to the examples."""
    noise = torch.randn(example.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scale = 0.1 * (1.0 + float(example.detach().abs().max()))
    probe = (example.detach().double() + scale * noise.to(example.device)).to(example.dtype).requires_grad_(True)
    try:
        with torch.enable_grad(), static.record(probe):
            module(probe.clone())
    except ExportError:
        raise
    except Exception:  # noqa: BLE001, S110 - the model's own failure on an input it was not given: no evidence
        return


def _dims(shape: torch.Size, axis: int | None, dynamic: bool) -> list[int | str]:
    return ["batch" if dynamic and i == axis else int(n) for i, n in enumerate(shape)]


def build_metadata(job: ExportJob, input_name: str, output_name: str) -> dict[str, str]:
    """odegrad version, method, order, steps, input/output names, shapes and dtype, and a small
    probe (input rows and PyTorch outputs) that lets ``serve-check`` verify the file later."""
    meta = job.info.as_metadata()
    dtype = str(job.example.dtype).removeprefix("torch.")
    meta["odegrad.inputs"] = json.dumps([{"name": input_name, "dtype": dtype,
                                          "shape": _dims(job.example.shape, 0, job.dynamic_batch)}])
    meta["odegrad.outputs"] = json.dumps([{"name": output_name, "dtype": dtype,
                                           "shape": _dims(job.expected[0].shape, job.output_batch_axis,
                                                          job.dynamic_batch)}])
    if job.output_batch_axis is not None:
        meta["odegrad.output_batch_axis"] = str(job.output_batch_axis)
    if job.example.numel() <= _PROBE_LIMIT and job.expected[0].numel() <= _PROBE_LIMIT:
        meta["odegrad.probe"] = json.dumps({
            "input": job.example.cpu().double().tolist(), "output": job.expected[0].cpu().double().tolist(),
            "atol": job.tolerance.atol, "rtol": job.tolerance.rtol})
    return meta
