"""The ``odegrad`` command. Each subcommand lives in its own module exposing
``register(subparsers)``, which adds its parser(s) with ``set_defaults(run=callable)``;
``run(args) -> int`` is the exit status."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
