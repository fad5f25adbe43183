"""Griffe extension: document the top-level ``export/`` folder as ``odegrad.export``.

pyproject.toml installs ``export/`` as the subpackage ``odegrad.export`` (``package-dir``), a mapping
that griffe's static finder does not read. This extension loads ``export`` from the repository root
and attaches it to the ``odegrad`` package, so ``::: odegrad.export`` renders with its installed
name, without importing the code.
"""

from __future__ import annotations

from typing import Any

import griffe


class ExportSubpackage(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path == "odegrad":
            export = loader.load("export", try_relative_path=False)
            pkg.set_member("export", export)
