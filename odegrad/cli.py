"""The ``odegrad`` command. Each subcommand lives in its own module exposing
``register(subparsers)``, which adds its parser(s) with ``set_defaults(run=callable)``;
``run(args) -> int`` is the exit status."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from . import __version__
from .errors import InvalidInput

EXIT_BAD_INPUT = 2

# Modules providing subcommands (imported lazily so `odegrad --help` stays fast).
_COMMAND_MODULES = (
    "odegrad.demo",
    "odegrad.export._commands",
    "odegrad.testing._check_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="odegrad", description="Neural ODEs with swappable integrators and gradient backends: "
                                    "demo, export, serving checks and gradient checks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """Give a subcommand ``--import MODULE`` (repeatable): modules imported before it runs, e.g.
    the one that calls ``odegrad.export.register_module`` for the user's own vector fields."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (repeatable), e.g. the module that registers your own "
                             "vector fields with odegrad.export.register_module")


def import_module(name: str, argument: str) -> ModuleType:
    """Import ``name`` for the command-line ``argument``; modules next to the caller are found,
    as with ``python -m``.

    Raises:
        InvalidInput: the module cannot be imported (not found, or it raised while importing).
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except SystemExit as error:  # sys.exit() at import would end the command as if it had succeeded
        raise InvalidInput(argument, name, f"an importable module (it called sys.exit({error.code!r}) while "
                           "being imported)") from None
    except Exception as error:  # noqa: BLE001 - a SyntaxError or any exception at import: bad input
        raise InvalidInput(argument, name, f"an importable module ({type(error).__name__}: {error})") from None


def call_target(target: str, argument: str, returns: str) -> Any:
    """Import ``module:callable`` (``callable`` may be dotted), call it without arguments and
    return its result.

    Raises:
        InvalidInput: ``target`` is not ``module:callable``, the module does not import, the
            attribute is missing or not callable, or calling it raised (``returns`` says what it
            should give).
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidInput(argument, target, f"'module:callable' returning {returns}")
    obj: Any = import_module(module_name, f"{argument} module")
    for name in attribute.split("."):
        if not hasattr(obj, name):
            raise InvalidInput(f"{argument} callable", target, f"an attribute {name!r} of {obj!r}")
        obj = getattr(obj, name)
    if not callable(obj):
        raise InvalidInput(f"{argument} callable", target, f"a callable returning {returns}")
    build: Callable[[], Any] = obj
    try:
        return build()
    except Exception as error:  # noqa: BLE001 - the target's own failure
        raise InvalidInput(f"{argument} callable", target, f"a callable returning {returns}",
                           hint=f"calling it raised {type(error).__name__}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``odegrad`` command; returns its exit status (2, with one line on stderr, for bad
    input: an ``--import`` that fails, or an :class:`InvalidInput` from the subcommand)."""
    args = build_parser().parse_args(argv)
    try:
        for name in getattr(args, "imports", ()):
            import_module(name, "--import")
        return int(args.run(args) or 0)
    except InvalidInput as error:
        print(f"odegrad {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
