"""PEP 517 build backend: setuptools, with an editable install that no folder named ``odegrad`` shadows.

odegrad ships the top-level ``export/`` folder as ``odegrad.export`` (``package-dir`` in pyproject.toml).
For such a mapping setuptools implements ``pip install -e .`` with an import finder that it *appends* to
``sys.meta_path``, after Python's ``PathFinder``. ``PathFinder`` turns any folder named ``odegrad`` on
``sys.path`` — the clone itself when Python runs from the folder that contains it, since the current
directory comes first — into an empty namespace package, and the finder is never asked. The editable
wheel built here also installs a small finder ahead of ``PathFinder``: a regular ``odegrad`` package on
``sys.path`` (``PYTHONPATH``, another checkout as the current directory) still wins, as it would over
an installed wheel, but a namespace folder does not; the checkout does. New and renamed modules are
seen without a reinstall (setuptools' ``editable_mode=strict`` link tree would need one), and no
other top-level name of the repository becomes importable (setuptools' ``compat`` mode would expose
them and lose ``odegrad.export``). Every other hook is setuptools' own.
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

# Added to the editable wheel as {finder}_first.py, imported by {finder}_first.pth.
_FIRST_FINDER = '''"""odegrad's editable install (tools/build_backend.py): a folder named odegrad never shadows it."""

import sys
from importlib.machinery import PathFinder

from {finder} import MAPPING, _EditableFinder


class RegularPackageFirst:
    """Ahead of setuptools' finder: a regular package on sys.path wins, as it would over an installed
    wheel; a namespace folder (no __init__.py) does not, the checkout does."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in MAPPING:
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            return spec
        return _EditableFinder.find_spec(fullname, path, target)


sys.meta_path.insert(0, RegularPackageFirst)
'''


def build_editable(wheel_directory: str, config_settings: dict | None = None,
                   metadata_directory: str | None = None) -> str:
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_first_finder(Path(wheel_directory) / name)
    return name


def _add_first_finder(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    (pth,) = [name for name in members if name.startswith("__editable__.") and name.endswith(".pth")]
    match = _FINDER_PTH.fullmatch(members[pth].decode().strip())
    if match is None:
        # setuptools chose a path-based install (e.g. editable_mode=strict): a regular package on
        # sys.path already takes precedence over namespace folders.
        return
    finder = match.group(1)
    if "class _EditableFinder" not in members[f"{finder}.py"].decode():
        raise RuntimeError(f"{finder}.py from this setuptools version has no _EditableFinder; "
                           "update tools/build_backend.py")
    added = {f"{finder}_first.py": _FIRST_FINDER.format(finder=finder).encode(),
             f"{finder}_first.pth": f"import {finder}_first\n".encode()}
    (record,) = [name for name in members if name.endswith(".dist-info/RECORD")]
    lines = [f"{name},{_digest(data)},{len(data)}" for name, data in added.items()]
    members[record] = ("\n".join(lines) + "\n").encode() + members[record]
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in {**members, **added}.items():
            target.writestr(name, data)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
