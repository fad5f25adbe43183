"""PEP 517 build backend: setuptools, with an editable install that no folder named ``odegrad`` shadows.

odegrad ships the top-level ``export/`` folder as ``odegrad.export`` (``package-dir`` in pyproject.toml).
For such a mapping setuptools implements ``pip install -e .`` with an import finder that it *appends* to
``sys.meta_path``, after Python's ``PathFinder``. ``PathFinder`` turns any folder named ``odegrad`` on
``sys.path`` — the clone itself when Python runs from the folder that contains it, since the current
directory comes first — into an empty namespace package, and the finder is never asked. Here the
editable wheel's ``.pth`` line also moves that finder to the front of ``sys.meta_path``, so ``odegrad``
and ``odegrad.export`` always resolve to the checkout. New and renamed modules are seen without a
reinstall (setuptools' ``editable_mode=strict`` link tree would need one). Every other hook is
setuptools' own.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable", "get_requires_for_build_sdist",
    "get_requires_for_build_wheel", "prepare_metadata_for_build_editable", "prepare_metadata_for_build_wheel",
]

# The line setuptools writes into the editable wheel's .pth file for a finder-based install.
_FINDER_PTH = re.compile(r"import (__editable___\w+_finder); \1\.install\(\)")


def build_editable(wheel_directory: str, config_settings: dict | None = None,
                   metadata_directory: str | None = None) -> str:
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _put_finder_first(Path(wheel_directory) / name)
    return name


def _put_finder_first(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    (pth,) = [name for name in members if name.startswith("__editable__.") and name.endswith(".pth")]
    match = _FINDER_PTH.fullmatch(members[pth].decode().strip())
    if match is None:
        # setuptools chose a path-based install (e.g. editable_mode=strict): regular packages on
        # sys.path already take precedence over namespace folders.
        return
    finder = match.group(1)
    if "class _EditableFinder" not in members[f"{finder}.py"].decode():
        raise RuntimeError(f"{finder}.py from this setuptools version has no _EditableFinder; "
                           "update tools/build_backend.py")
    members[pth] = (f"import sys, {finder}; {finder}.install(); "
                    f"sys.meta_path.remove({finder}._EditableFinder); "
                    f"sys.meta_path.insert(0, {finder}._EditableFinder)\n").encode()
    (record,) = [name for name in members if name.endswith(".dist-info/RECORD")]
    lines = [f"{pth},{_digest(members[pth])},{len(members[pth])}" if line.startswith(f"{pth},") else line
             for line in members[record].decode().splitlines()]
    members[record] = ("\n".join(lines) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in members.items():
            target.writestr(name, data)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
