"""``to_torchscript``: fixed-cost model -> validated TorchScript file (``torch.jit.trace``).

``torch.jit.trace`` records whatever branch the example input takes, silently; so the model is
first captured with ``torch.export``, which refuses data-dependent control flow, and only then
traced. The odegrad metadata is stored in the archive as the extra file ``odegrad.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from odegrad.errors import ExportError

from ._common import ExportResult, build_metadata, prepare_job, record_solves
from ._files import atomic_write, existing_file, output_path
from ._graph import export_program, inference_module
from ._validation import require_parity

METADATA_FILE = "odegrad.json"


@contextlib.contextmanager
def _quiet_jit():
    # torch 2.13 deprecates torch.jit.trace in favour of torch.export; TorchScript is still what
    # LibTorch (C++) deployments load, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def to_torchscript(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *,
                   atol: float | None = None, rtol: float | None = None) -> ExportResult:
    """Export a fixed-cost model to a TorchScript archive loadable by ``torch.jit.load`` / LibTorch.

    Args:
        model: as for :func:`odegrad.export.to_onnx` (adaptive ODE blocks are refused).
        example_input: ``Tensor[batch, *state]``; the traced module accepts any batch size.
        path: file to write (atomically, after validation).
        atol, rtol: parity tolerance against eager PyTorch (defaults depend on the dtype).

    The archive is reloaded and run on the example input and at a second batch size before it
    is moved into place.
    """
    output_path(path)  # an unwritable target fails now, not after the export
    job = prepare_job(model, example_input, dynamic_batch=True, atol=atol, rtol=rtol)
    with inference_module(model) as module:
        static = record_solves(module, job)
        with static.replay():
            export_program(module, job.traced_example, dynamic_batch=True)  # refuses data-dependent flow
        try:
            with _quiet_jit(), torch.no_grad(), static.replay():
                traced = torch.jit.trace(module, (job.traced_example,), check_trace=False)
        except Exception as error:
            raise ExportError(f"torch.jit.trace failed: {type(error).__name__}: {error}") from error
    meta = build_metadata(job, "input", "output")
    with atomic_write(path) as tmp:
        with _quiet_jit():
            torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta)})
        loaded = load_torchscript(tmp)[0]
        with torch.no_grad():
            parities = [require_parity(expected, loaded(x), job.tolerance,
                                       f"the TorchScript module (batch {x.shape[0]})")
                        for x, expected in zip(job.examples, job.expected)]
    return ExportResult(path=Path(path), format="torchscript", parity=parities[0], metadata=meta)


def load_torchscript(path: str | os.PathLike,
                     map_location: str | torch.device | None = None) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load a TorchScript archive and its odegrad metadata (empty when it was not made by odegrad).
    A truncated or corrupted archive raises :class:`ExportError`."""
    source = existing_file(path, "a TorchScript archive")
    extra = {METADATA_FILE: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(source), map_location=map_location, _extra_files=extra)
    except Exception as error:
        raise ExportError(f"{source} is not a loadable TorchScript archive (truncated or corrupted, or "
                          f"not TorchScript?): {type(error).__name__}: {str(error).strip().splitlines()[0]}") from error
    try:
        meta = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{source} has a corrupted {METADATA_FILE} entry: {error}") from error
    except RecursionError:
        raise ExportError(f"{source} has a corrupted {METADATA_FILE} entry: JSON nested too deeply to read") from None
    module.eval()
    return module, meta
