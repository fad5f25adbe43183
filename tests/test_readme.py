"""README.md's Python blocks (and those of the docs/ pages) run as written: in order, in one
namespace per file, from an empty directory.

A block that is deliberately partial is preceded by the line ``<!-- readme-test: skip -->``
(rendered invisibly on GitHub and PyPI); use it only where running the block cannot make sense.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP_MARKER = "<!-- readme-test: skip -->"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# Runs every document in one subprocess (one interpreter start and torch import for all of them),
# each in its own namespace and its own empty folder; each block is compiled under its document's
# name and line numbers, so a traceback points at the line that failed. Prints one JSON object:
# document -> None (ran) or the traceback.
RUNNER = """
import json, os, sys, traceback
results = {}
for document, folder, blocks in json.load(sys.stdin):
    os.chdir(folder)
    namespace = {"__name__": "__main__"}
    try:
        for line, code in blocks:
            exec(compile("\\n" * (line - 1) + code, document, "exec"), namespace)
        results[document] = None
    except BaseException:
        results[document] = traceback.format_exc()
print(json.dumps(results))
"""


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(first code line, code, skipped) for every ```python block of ``text``."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n")
        skipped = before.endswith(SKIP_MARKER)
        blocks.append((text.count("\n", 0, match.start(1)) + 1, match.group(1), skipped))
    return blocks


def test_block_extraction_keeps_line_numbers_and_skip_markers():
    text = "intro\n\n```python\na = 1\n```\n\n" + SKIP_MARKER + "\n```python\nb = a\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(4, "a = 1\n", False), (9, "b = a\n", True)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_skip_marker_precedes_a_python_block(document):
    text = document.read_text(encoding="utf-8")
    markers = sum(line.strip() == SKIP_MARKER for line in text.splitlines())
    assert markers == sum(skipped for *_, skipped in python_blocks(text))


def test_readme_has_python_blocks():
    assert python_blocks(DOCUMENTS[0].read_text(encoding="utf-8"))


INSTALL_AND_DEMO = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/odegrad demo"
INSTALL_AND_TEST = ('python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && .venv/bin/ruff check . '
                    "&& .venv/bin/python -m pytest -q")


def test_readme_keeps_its_two_quick_start_commands_and_ci_runs_the_second():
    readme = DOCUMENTS[0].read_text(encoding="utf-8")
    bash_blocks = re.findall(r"^```bash\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL)
    assert f"{INSTALL_AND_DEMO}\n" in bash_blocks and f"{INSTALL_AND_TEST}\n" in bash_blocks
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # .ci/run creates the venv first (then may pin a CPU torch), then runs the rest of the command verbatim
    create, rest = INSTALL_AND_TEST.split(" && ", 1)
    assert f"{create} || exit 1" in ci and rest in ci.splitlines()


def test_readme_is_a_five_minute_read():
    assert len(DOCUMENTS[0].read_text(encoding="utf-8").splitlines()) <= 250


RUNNABLE = [path for path in DOCUMENTS if python_blocks(path.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def block_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Every runnable document's blocks, run once for all the tests below: document -> None or its
    traceback, and "stderr" -> what the documents wrote there."""
    runs = []
    for document in RUNNABLE:
        name = str(document.relative_to(ROOT))
        blocks = [(line, code) for line, code, skipped in python_blocks(document.read_text(encoding="utf-8"))
                  if not skipped]
        runs.append((name, str(tmp_path_factory.mktemp(document.stem)), blocks))
    result = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(runs), capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr
    return {**json.loads(result.stdout.splitlines()[-1]), "stderr": result.stderr}


@pytest.mark.parametrize("document", RUNNABLE, ids=lambda path: str(path.relative_to(ROOT)))
def test_python_blocks_run_in_order(document, block_runs):
    failure = block_runs[str(document.relative_to(ROOT))]
    assert failure is None, f"{failure}\nstderr of all documents (tail):\n{block_runs['stderr'][-3000:]}"
