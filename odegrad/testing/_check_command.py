"""``odegrad check TARGET``: run :func:`~odegrad.testing.check_gradients` on a user's model and
exit non-zero when the gradients disagree (usable as a CI step).

TARGET is either ``module:callable`` — the callable takes no arguments and returns
``(func, y0, t)`` or a dict with keys ``func``, ``y0``, ``t`` (and optionally ``loss``) — or the
path of a NeuralODE / TLNODE saved by :func:`odegrad.export.save_model` (state dict + JSON config,
read with ``torch.load(weights_only=True)``: nothing is unpickled). A saved model is checked on its
vector field over its own time span, from a random input of the saved shape, with dopri5 and its
own method.

Exit status: 0 pass, 1 disagreement, 2 bad target (a module that fails to import or a callable
that raises, a file that is not a saved model, bad options).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import add_import_option
from ..errors import InvalidInput, OdegradError

EXIT_DISAGREE = 1
EXIT_BAD_TARGET = 2
DEFAULT_METHODS = ("dopri5",)
_DTYPES = ("float64", "float32")


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise InvalidInput("--methods/--gradients", text, "a comma-separated list of names")
    return names


def _unpack(target: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        missing = {"func", "y0", "t"} - value.keys()
        if missing:
            raise InvalidInput("TARGET", f"a dict without {sorted(missing)}",
                               "keys 'func', 'y0', 't' (and optionally 'loss')")
        return {k: value[k] for k in ("func", "y0", "t", "loss") if k in value}
    if isinstance(value, (tuple, list)) and len(value) == 3:
        return dict(zip(("func", "y0", "t"), value))
    raise InvalidInput("TARGET", f"{target} gave {type(value).__name__}",
                       "(func, y0, t) or a dict with keys 'func', 'y0', 't'")


def _saved_model_problem(path: Path) -> dict[str, Any]:
    """(func, y0, t) of a saved NeuralODE or TLNODE: its field over its own time span."""
    import torch

    from odegrad.export import example_for, load_model
    from odegrad.models import TLNODE, NeuralODE

    model, config = load_model(path)
    if isinstance(model, NeuralODE):
        times = list(model.times)
    elif isinstance(model, TLNODE):
        times = [model.t0, model.t0 + model.horizon]
    else:
        raise InvalidInput("TARGET", f"{path} holds a {type(model).__name__}",
                           "a saved NeuralODE or TLNODE (or use 'module:callable')")
    y0 = example_for(config, batch=4)
    own = model.method if isinstance(model, NeuralODE) else "taylor"
    return {"func": model.func, "y0": y0, "t": torch.tensor(times, dtype=y0.dtype),
            "methods": list(dict.fromkeys((*DEFAULT_METHODS, own)))}


def load_target(target: str) -> dict[str, Any]:
    """Resolve TARGET (see the module docstring) to ``{"func", "y0", "t"[, "loss"]}``."""
    path = Path(target)
    if path.is_file():
        return _saved_model_problem(path)
    from ..cli import call_target

    if ":" not in target:
        raise InvalidInput("TARGET", target, "'module:callable' or the path of a model saved by "
                           "odegrad.export.save_model")
    value = call_target(target, "TARGET", "(func, y0, t)")
    return _unpack(target, value)


def run(args: argparse.Namespace) -> int:
    """Run the check; print the table and return the exit status (see the module docstring)."""
    import torch

    from ._gradient_check import check_gradients

    try:
        problem = load_target(args.target)
        report = check_gradients(problem["func"], problem["y0"], problem["t"],
                                 methods=_split_names(args.methods) or problem.get("methods", DEFAULT_METHODS),
                                 gradients=_split_names(args.gradients),
                                 loss=problem.get("loss"), tolerance=args.tolerance, rtol=args.rtol,
                                 atol=args.atol, step_size=args.step_size, dtype=getattr(torch, args.dtype),
                                 fd_directions=args.fd_directions, seed=args.seed)
    except OdegradError as error:
        print(f"odegrad check: {error}", file=sys.stderr)
        return EXIT_BAD_TARGET
    except Exception as error:  # noqa: BLE001 - func failed before any pair ran: the target is bad
        print(f"odegrad check: {args.target} cannot be checked: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_BAD_TARGET
    print(report.table())
    return 0 if report.passed else EXIT_DISAGREE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="check a model's gradients across integrators and gradient backends",
        description="Run every (method, gradient) pair on your model in float64 (or --dtype), compare each "
                    "pair's gradients with a converged reference (itself checked by finite differences "
                    "along every gradient group), print the table; exit 1 "
                    "on disagreement, 2 on a bad target. A non-smooth field (ReLU, abs, max, ...) "
                    "is named beside the verdict with what tolerance or activation would pass.")
    add_import_option(parser)
    parser.add_argument("target", metavar="TARGET",
                        help="module:callable returning (func, y0, t) or a dict with func, y0, t "
                             "(and optionally loss), or a NeuralODE/TLNODE file written by "
                             "odegrad.export.save_model (never unpickled)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated integrators (default: dopri5, plus a saved model's own method)")
    parser.add_argument("--gradients", default=None,
                        help="comma-separated gradient backends (default: all registered)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="relative tolerance of every comparison (default: the error model's)")
    parser.add_argument("--rtol", type=float, default=None,
                        help="rtol of the adaptive methods (default: tight enough for the error model)")
    parser.add_argument("--atol", type=float, default=None,
                        help="atol of the adaptive methods (default: tight enough for the error model)")
    parser.add_argument("--step-size", type=float, default=None,
                        help="step of the fixed-step methods (default: small enough for the error model)")
    parser.add_argument("--dtype", choices=_DTYPES, default="float64",
                        help="precision of the checked runs (default: float64; float32 adds its round-off "
                             "to the tolerances)")
    parser.add_argument("--fd-directions", type=int, default=3,
                        help="random directions of the finite-difference check of the reference, "
                             "besides one along each gradient group (0 skips the check)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the default loss and FD directions")
    parser.set_defaults(run=run)
