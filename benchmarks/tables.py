"""Markdown tables as data: every benchmark script prints its results as markdown tables; this
module reads them back from a script's saved output (or from the Benchmarks page of the docs) and
writes each one as CSV and JSON.

    python benchmarks/bench_export.py | tee export.md
    python benchmarks/tables.py export.md                  # export.1.csv, export.1.json, ...
    python benchmarks/tables.py OUTDIR/*.md                # every part of a gpu_suite.sh run

``tools/bench_figures.py`` draws the figures of the Benchmarks page from the same tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


@dataclass
class Table:
    """One markdown table: the heading above it (the nearest ``#`` line, empty if none), its
    column names and its rows of cell texts."""

    heading: str
    columns: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        return [row[self.columns.index(name)] for row in self.rows]

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_tables(text: str) -> list[Table]:
    """Every markdown table of ``text``, in order."""
    tables, heading, lines = [], "", text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        is_table = (line.startswith("|") and index + 1 < len(lines)
                    and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1].strip()))
        if not is_table:
            index += 1
            continue
        columns, rows = cells(line), []
        index += 2
        while index < len(lines) and lines[index].startswith("|"):
            rows.append(cells(lines[index]))
            index += 1
        tables.append(Table(heading, columns, rows))
    return tables


def number(cell: str) -> float:
    """The first number in a cell ("**26.2** (26)" -> 26.2, "0.55x" -> 0.55); NaN if there is none
    ("–", "—", empty)."""
    match = NUMBER.search(cell.replace("**", ""))
    return float(match.group()) if match else math.nan


def write(table: Table, stem: Path) -> tuple[Path, Path]:
    """``stem``.csv and ``stem``.json (heading, columns and the rows as records)."""
    csv_path, json_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")
    with csv_path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    json_path.write_text(json.dumps({"heading": table.heading, "columns": table.columns, "rows": table.records()},
                                    ensure_ascii=False, indent=1), encoding="utf-8")
    return csv_path, json_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the markdown tables of benchmark outputs as CSV and JSON.")
    parser.add_argument("outputs", nargs="+", type=Path, help="saved outputs of benchmark scripts (markdown)")
    for output in parser.parse_args(argv).outputs:
        for index, table in enumerate(read_tables(output.read_text(encoding="utf-8")), start=1):
            csv_path, json_path = write(table, output.with_name(f"{output.stem}.{index}"))
            print(f"{output}: table {index} ({table.heading or 'no heading'}) -> {csv_path}, {json_path}")


if __name__ == "__main__":
    main()
