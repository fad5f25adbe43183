"""The example gallery: one documentation page per script in ``examples/``.

Two roles, one list of examples (``EXAMPLES``):

* an mkdocs hook (``hooks:`` in mkdocs.yml): while the site builds, ``on_files`` adds
  ``gallery/index.md`` and one ``gallery/<script>.md`` per example, made from the script as it is
  now (its docstring, its source) and from the output of its last quick run, committed under
  ``docs/gallery/`` (``<script>.txt``, the printed output, and ``<script>.png``, its figure);
* a build step, ``python tools/gallery.py [NAME ...]``: runs each example (or the named ones) in
  its quick mode from a scratch folder and refreshes those committed outputs. A few minutes on 2
  CPU cores; the documentation build itself never runs an example.

A full-length run (the scripts without ``--quick``) is a manual step; its numbers belong on the
benchmark pages, not in the gallery.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
OUTPUTS = ROOT / "docs" / "gallery"


@dataclass(frozen=True)
class Example:
    """A script of ``examples/``, its title, and the arguments of its quick run (``--out`` is added)."""

    script: str
    title: str
    quick: tuple[str, ...] = ("--quick",)

    @property
    def name(self) -> str:
        return Path(self.script).stem

    def docstring(self) -> str:
        return ast.get_docstring(ast.parse((EXAMPLES_DIR / self.script).read_text(encoding="utf-8"))) or ""


EXAMPLES = (
    Example("lotka_volterra.py", "Lotka–Volterra: TL-NODE vs dopri5", ("--quick", "--no-progress")),
    Example("digits_classification.py", "Digits classification with an ODE block", ("--quick", "--no-progress")),
    Example("density_cnf.py", "2-D density estimation with a continuous normalizing flow",
            ("--quick", "--no-progress")),
    Example("regularization.py", "Local regularization: fewer solver steps", ("--quick", "--no-progress")),
    Example("sde_ou_gbm.py", "Neural SDEs: an OU process and a GBM"),
    Example("export_onnx.py", "Export to ONNX and serve with onnxruntime"),
    Example("stiff_robertson.py", "Stiff kinetics: Robertson's rate constants with an implicit solver"),
)


def page(example: Example) -> str:
    """The gallery page of one example: what it does, how to run it, its output, figure and code."""
    summary, _, details = example.docstring().partition("\n")
    output = (OUTPUTS / f"{example.name}.txt").read_text(encoding="utf-8").rstrip()
    quick = " ".join(example.quick)
    source = (EXAMPLES_DIR / example.script).read_text(encoding="utf-8").rstrip()
    return f"""# {example.title}

{summary}

{details.strip()}

## Output

Printed by `python examples/{example.script} {quick}` (the quick mode: a few iterations, so the
numbers show the format, not the full run's results; run the script without `--quick` for those):

```text
{output}
```

![Figure written by examples/{example.script}]({example.name}.png)

## Code

`examples/{example.script}`{" (shared helpers: `examples/_harness.py`)" if "_harness" in source else ""}:

```python
{source}
```
"""


def index() -> str:
    """The gallery's landing page: one thumbnail and summary per example."""
    entries = []
    for example in EXAMPLES:
        summary = example.docstring().partition("\n")[0]
        entries.append(f"## [{example.title}]({example.name}.md)\n\n{summary}\n\n"
                       f"[![{example.title}]({example.name}.png)]({example.name}.md)\n")
    return ("# Example gallery\n\nComplete training scripts from `examples/`, each with the output of a quick run "
            "and the figure it draws. Run one from a clone with `python examples/<script>.py` "
            "(`--quick` for a smoke run). Each page shows the script as it is in the repository; "
            "`python tools/gallery.py` reruns every example in its quick mode and refreshes the "
            "outputs shown here.\n\n" + "\n".join(entries))


def on_files(files, config):
    """mkdocs hook: add the gallery pages to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "gallery/index.md", content=index()))
    for example in EXAMPLES:
        files.append(File.generated(config, f"gallery/{example.name}.md", content=page(example)))
    return files


def on_serve(server, config, builder):
    """mkdocs hook: ``mkdocs serve`` rebuilds when a script of ``examples/`` changes."""
    server.watch(str(EXAMPLES_DIR))
    return server


def run(example: Example) -> None:
    """Run one example in its quick mode and store its printed output and figure in docs/gallery/."""
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run([sys.executable, str(EXAMPLES_DIR / example.script), *example.quick,
                                 "--out", scratch], cwd=scratch, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{example.script} failed:\n{result.stderr}")
        output = result.stdout.replace(scratch, "examples_out")
        (OUTPUTS / f"{example.name}.txt").write_text(output, encoding="utf-8")
        shutil.copyfile(Path(scratch) / f"{example.name}.png", OUTPUTS / f"{example.name}.png")
    print(f"{example.script}: docs/gallery/{example.name}.txt, docs/gallery/{example.name}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the examples in their quick mode and refresh docs/gallery/.")
    parser.add_argument("names", nargs="*", help="examples to run (default: all), e.g. lotka_volterra")
    names = parser.parse_args(argv).names
    unknown = set(names) - {example.name for example in EXAMPLES}
    if unknown:
        parser.error(f"unknown examples {sorted(unknown)}; known: {[example.name for example in EXAMPLES]}")
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    for example in EXAMPLES:
        if not names or example.name in names:
            run(example)


if __name__ == "__main__":
    main()
