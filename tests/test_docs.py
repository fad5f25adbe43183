"""The documentation site builds with ``mkdocs build --strict`` and documents the public surface.

Each API page renders one public package (``::: odegrad.solvers``); its members come from the
package's ``__all__``, so every exported name must appear there and no private module may.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = ("odegrad", "odegrad.solvers", "odegrad.gradients", "odegrad.models", "odegrad.sde",
                   "odegrad.errors", "odegrad.testing", "odegrad.export")
ANCHOR = re.compile(r'id="(odegrad[\w.]*)"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                            cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def anchors(site: Path, package: str) -> set[str]:
    return set(ANCHOR.findall((site / "reference" / package / "index.html").read_text(encoding="utf-8")))


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_api_page_documents_the_package_under_its_public_name(site, package):
    documented = anchors(site, package)
    assert package in documented
    assert not [name for name in documented if re.search(r"\._(?!_)", name)], "a private name is documented"


def public_names(module: ModuleType) -> set[str]:
    """``__all__``, or else the public names a module defines itself; submodules have their own pages."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, value in vars(module).items()
                 if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__]
    return {name for name in names if not inspect.ismodule(getattr(module, name))}


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_api_page_lists_every_public_name(site, package):
    names = public_names(importlib.import_module(package))
    assert names
    assert not {name for name in names if f"{package}.{name}" not in anchors(site, package)}
