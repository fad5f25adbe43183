"""The documentation site builds with ``mkdocs build --strict`` and documents the public surface.

Each API page renders one public package (``::: odegrad.solvers``); its members come from the
package's ``__all__``, so every exported name must appear there and no private module may. Every
internal link and anchor of the built site resolves, the README's links point at pages and
headings that exist, and the example gallery has a page (with output and figure) per script.
"""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = ("odegrad", "odegrad.solvers", "odegrad.gradients", "odegrad.models", "odegrad.regularization",
                   "odegrad.sde", "odegrad.events", "odegrad.jet", "odegrad.errors", "odegrad.testing",
                   "odegrad.export")
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


def test_every_public_module_has_an_api_page():
    modules = {path.stem for path in (ROOT / "odegrad").glob("*.py") if not path.name.startswith("_")}
    modules -= {"api", "cli", "demo"}  # api: re-exported by `odegrad`; cli, demo: the `odegrad` command
    assert {f"odegrad.{name}" for name in modules} <= set(PUBLIC_PACKAGES)


class Links(HTMLParser):
    """The ids of a page and the targets of its links and images."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        target = attrs.get("href") if tag in ("a", "link") else attrs.get("src") if tag in ("img", "script") else None
        if target:
            self.targets.append(target)


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def resolve(site: Path, page: Path, target: str) -> tuple[Path, str] | None:
    """The file and fragment an internal link of ``page`` points at; None for external links."""
    if urlparse(target).scheme or target.startswith(("//", "mailto:")):
        return None
    path, fragment = urldefrag(target)
    if path.startswith("/"):  # 404.html links from the site's root
        file = (site / unquote(path).lstrip("/")).resolve()
    else:
        file = (page.parent / unquote(path)).resolve() if path else page
    if file.is_dir():
        file = file / "index.html"
    return file, fragment


def test_every_internal_link_and_anchor_of_the_site_resolves(site):
    pages = {page: parse(page) for page in site.rglob("*.html")}
    broken = []
    for page, links in pages.items():
        for target in links.targets:
            resolved = resolve(site, page, target)
            if resolved is None:
                continue
            file, fragment = resolved
            if not file.exists():
                broken.append(f"{page.relative_to(site)}: {target} (no such file)")
            elif fragment and file.suffix == ".html" and fragment not in pages[file].ids:
                broken.append(f"{page.relative_to(site)}: {target} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_readme_links_point_at_pages_and_headings_that_exist(site):
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    internal = [link for link in links if not urlparse(link).scheme]
    assert any(link.startswith("docs/guides/") for link in internal)
    missing = []
    for link in internal:
        path, fragment = urldefrag(link)
        if not (ROOT / path).exists():
            missing.append(link)
        elif fragment:
            built = site / Path(path).relative_to("docs").with_suffix("") / "index.html"
            if fragment not in parse(built).ids:
                missing.append(link)
    assert not missing


def test_gallery_has_a_page_with_output_figure_and_code_per_example(site):
    scripts = sorted(path for path in (ROOT / "examples").glob("*.py") if not path.name.startswith("_"))
    for script in scripts:
        page = site / "gallery" / script.stem / "index.html"
        assert page.exists(), f"{script.name} has no gallery page (add it to tools/gallery.py's EXAMPLES)"
        links = parse(page)
        assert f"../{script.stem}.png" in links.targets, script.name
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
        printed = (ROOT / "docs" / "gallery" / f"{script.stem}.txt").read_text(encoding="utf-8").splitlines()
        assert printed[0] in text and script.read_text(encoding="utf-8").splitlines()[-1] in text, script.name
