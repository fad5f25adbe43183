"""``odegrad export`` and ``odegrad serve-check`` subcommands.

MODEL is a file written by :func:`odegrad.export.save_model` (its own vector fields registered
with :func:`odegrad.export.register_module` by a module named with ``--import``), or
``module:callable``: a callable without arguments returning the model, or ``(model,
example_input)`` (``odegrad export`` needs the example, for its per-sample shape and dtype).

Exit status: 0 on success, 1 when an exported graph does not reproduce PyTorch (parity failure),
2 on bad input (a missing, unreadable or wrong-kind file, an unwritable target, a model that
cannot be exported, a module that fails to import, bad flags), as for ``odegrad check``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from odegrad.cli import add_import_option, call_target
from odegrad.errors import InvalidInput, OdegradError, ParityMismatch

if TYPE_CHECKING:
    from torch import Tensor, nn

FORMATS = ("onnx", "torchscript")
EXIT_PARITY = 1
EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _batch_list(text: str) -> list[int]:
    """argparse type: comma-separated positive batch sizes, e.g. ``1,256``."""
    sizes = [_positive_int(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, got {text!r}")
    return sizes


_BUILT = "an nn.Module or (model, example_input)"
_MODEL_HELP = ("a file written by odegrad.export.save_model, or module:callable returning the model or "
               "(model, example_input)")


def load_target(target: str, batch: int) -> tuple[nn.Module, Tensor | None]:
    """The model MODEL names (see the module docstring) and an example input of ``batch`` rows
    (None when a callable returned the model alone).

    Raises:
        InvalidInput: a ``module:callable`` that does not import or returns something else.
        ExportError: a file that is not a saved model, or whose architecture is not registered.
    """
    import torch
    from torch import nn

    from ._serialization import example_for, load_model
    from ._validation import resized_batch

    if Path(target).exists() or ":" not in target:
        model, config = load_model(target)
        return model, example_for(config, batch)
    built = call_target(target, "MODEL", _BUILT)
    model, example = built if isinstance(built, (tuple, list)) and len(built) == 2 else (built, None)
    if not isinstance(model, nn.Module) or not (example is None or isinstance(example, torch.Tensor)):
        raise InvalidInput("MODEL callable", f"{target} gave {type(built).__name__}", _BUILT)
    if example is not None and example.dim() > 0:
        example = resized_batch(example.detach(), batch)
    return model.eval(), example


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export", help="export a saved fixed-cost model to ONNX or TorchScript",
        description="Export a model saved with odegrad.export.save_model (state dict + JSON config, loaded "
                    "with torch.load(weights_only=True)), or built by module:callable, to a validated ONNX "
                    "or TorchScript file. Exit status 1 on a parity failure, 2 on bad input.")
    export.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    add_import_option(export)
    export.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    export.add_argument("--out", required=True, metavar="PATH", help="file to write")
    export.add_argument("--batch", type=_positive_int, default=2, help="batch size of the example input (default: 2)")
    export.add_argument("--static-batch", action="store_true", help="ONNX: fix the batch size to --batch")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    export.add_argument("--atol", type=float, default=None, help="parity tolerance (default by dtype)")
    export.add_argument("--rtol", type=float, default=None, help="relative parity tolerance (default by dtype)")
    export.set_defaults(run=run_export)

    check = subparsers.add_parser(
        "serve-check", help="run an exported file on random input; print latency and parity",
        description="Run an exported .onnx (onnxruntime) or TorchScript file on random input, print latency "
                    "and throughput, and check parity with the output recorded at export (and with the "
                    "PyTorch model when --model is given). Exit status 1 on a parity failure, 2 on "
                    "bad input.")
    check.add_argument("path", metavar="PATH", help="exported .onnx or TorchScript file")
    check.add_argument("--batch", type=_batch_list, default=[1, 256], help="batch sizes, e.g. 1,256 (default)")
    check.add_argument("--repeats", type=_positive_int, default=50, help="timed calls per batch size (default: 50)")
    check.add_argument("--providers", default="auto", help="onnxruntime providers: auto, cpu or cuda")
    check.add_argument("--model", metavar="MODEL", default=None,
                       help=f"the PyTorch model, to add eager latency and parity columns: {_MODEL_HELP}")
    add_import_option(check)
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    check.add_argument("--threads", type=_positive_int, default=None,
                       help="intra-op threads for onnxruntime and torch (default: the libraries' own)")
    check.set_defaults(run=run_serve_check)


def _fail(command: str, error: Exception) -> int:
    """Print ``error`` and return the exit status: 1 for a parity failure, 2 for anything else
    (an exception that is no odegrad error comes from the model itself: bad input too)."""
    text = str(error) if isinstance(error, OdegradError) else f"{type(error).__name__}: {error}"
    print(f"odegrad {command}: error: {text}", file=sys.stderr)
    return EXIT_PARITY if isinstance(error, ParityMismatch) else EXIT_BAD_INPUT


def run_export(args: argparse.Namespace) -> int:
    from ._onnx import to_onnx
    from ._torchscript import to_torchscript

    try:
        model, example = load_target(args.model, args.batch)
        if example is None:
            raise InvalidInput("MODEL callable", f"{args.model} gave the model alone",
                               "(model, example_input): export needs the input's shape and dtype")
        if args.format == "onnx":
            result = to_onnx(model, example, args.out, dynamic_batch=not args.static_batch, opset=args.opset,
                             atol=args.atol, rtol=args.rtol)
        else:
            result = to_torchscript(model, example, args.out, atol=args.atol, rtol=args.rtol)
    except Exception as error:  # noqa: BLE001 - reported with exit status 2, never a traceback
        return _fail("export", error)
    print(result)
    for key in ("odegrad.kind", "odegrad.method", "odegrad.order", "odegrad.steps", "odegrad.inputs",
                "odegrad.outputs"):
        if key in result.metadata:
            print(f"  {key.removeprefix('odegrad.')}: {result.metadata[key]}")
    return 0


def run_serve_check(args: argparse.Namespace) -> int:
    from ._serve_check import check_exported

    try:
        model = load_target(args.model, batch=1)[0] if args.model else None
        report = check_exported(args.path, batch_sizes=args.batch, providers=args.providers,
                                repeats=args.repeats, seed=args.seed, model=model, threads=args.threads)
    except Exception as error:  # noqa: BLE001 - reported with exit status 2, never a traceback
        return _fail("serve-check", error)
    print(report)
    return 0 if report.ok else EXIT_PARITY
