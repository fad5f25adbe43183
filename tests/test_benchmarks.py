"""benchmarks/bench_gpu.py on a tiny problem: every method gets a timed row with its field calls,
ratios against torchdiffeq's adjoint, and diffrax rows are skipped with a reason where JAX is
missing (the benchmark numbers themselves are never asserted)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their shared helpers as `common`
    try:
        yield importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("bench_gpu", None)
        sys.modules.pop("common", None)


@pytest.fixture
def tiny(bench_gpu):
    common = sys.modules["common"]
    return common.ODEProblem("MLP 3-8-8-3, t = [0, 1]", (3, 8, 8, 3), 4, 1.0, 3, 1e-5, 1e-7)


def test_every_method_is_timed_with_its_field_calls(bench_gpu, tiny):
    rows = bench_gpu.time_problem(tiny, "cpu", batch=4, repeats=1)
    assert list(rows) == ["tdq direct", "tdq adjoint", "direct", "backsolve", "gq", "interp"]
    for name, (seconds, calls) in rows.items():
        assert seconds > 0 and calls > 0, name
    assert rows["backsolve"][1] > rows["direct"][1]  # the backward solve calls the field too


def test_report_gives_ratios_to_torchdiffeq_adjoint_and_odegrad_direct(bench_gpu, tiny):
    rows = {"tdq adjoint": (0.004, 10), "direct": (0.002, 5), "gq": (0.001, 7)}
    table = bench_gpu.report(tiny, 4, rows, {"diffrax BacksolveAdjoint": (0.008, 3)}).splitlines()
    assert "| direct | 2.0 | 5 | 0.50x | 1.00x |" in table
    assert "| gq | 1.0 | 7 | 0.25x | 0.50x |" in table
    assert "| diffrax BacksolveAdjoint | 8.0 | 3 | 2.00x | 4.00x |" in table


def test_diffrax_rows_are_skipped_with_the_reason_when_the_interpreter_lacks_jax(bench_gpu, capsys, tmp_path):
    fake = tmp_path / "python-without-jax"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named jax' >&2\nexit 1\n")
    fake.chmod(0o755)
    assert bench_gpu.diffrax_in_subprocess("T1", 4, 1, str(fake)) == {}
    assert "diffrax rows skipped for T1" in capsys.readouterr().out


@pytest.fixture
def tables():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("tables")
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("tables", None)


def test_printed_tables_become_csv_and_json_with_their_heading(tables, tmp_path):
    output = tmp_path / "run.md"
    output.write_text("## Memory\n\nintro | not a table\n\n| method | peak MiB |\n|---|---:|\n"
                      "| gq | **21.1** (0.69x) |\n| direct | – |\n\ntext\n| a | b |\n|---|---|\n| 1 | 2 |\n",
                      encoding="utf-8")
    tables.main([str(output)])
    first = json.loads((tmp_path / "run.1.json").read_text(encoding="utf-8"))
    assert first == {"heading": "Memory", "columns": ["method", "peak MiB"],
                     "rows": [{"method": "gq", "peak MiB": "**21.1** (0.69x)"}, {"method": "direct", "peak MiB": "–"}]}
    assert (tmp_path / "run.2.csv").read_text(encoding="utf-8").splitlines() == ["a,b", "1,2"]
    assert tables.number("**21.1** (0.69x)") == 21.1 and tables.number("1.5e-06") == 1.5e-06
    assert math.isnan(tables.number("–"))


def test_benchmark_figures_are_drawn_from_the_benchmarks_page_tables(tables, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_figures", BENCHMARKS.parent / "tools" / "bench_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    monkeypatch.setattr(figures, "FIGURES", tmp_path)
    figures.main()
    committed = {path.name for path in (BENCHMARKS.parent / "docs" / "figures").glob("*.png")}
    assert {path.name for path in tmp_path.glob("*.png")} == committed
    page = (BENCHMARKS.parent / "docs" / "guides" / "benchmarks.md").read_text(encoding="utf-8")
    assert all(f"(../figures/{name})" in page for name in committed)
