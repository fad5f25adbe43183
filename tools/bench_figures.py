"""Draw the figures of the Benchmarks page from its own tables.

The numbers live in one place, the measured tables of ``docs/guides/benchmarks.md``; this script
reads them (``benchmarks/tables.py``) and writes ``docs/figures/*.png``. After a new benchmark run,
paste its tables into the page and run

    python tools/bench_figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tables import Table, number, read_tables  # noqa: E402

PAGE = ROOT / "docs" / "guides" / "benchmarks.md"
FIGURES = ROOT / "docs" / "figures"
GPU = "NVIDIA H100 80GB HBM3"


def find(tables: list[Table], heading: str, first_column: str) -> Table:
    """The table under ``heading`` whose first column is ``first_column``."""
    for table in tables:
        if table.heading == heading and table.columns[0] == first_column:
            return table
    raise LookupError(f"no table under {heading!r} starting with column {first_column!r} in {PAGE}")


def grouped_bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    """One group of bars per entry of ``groups``, one bar per series (NaN: no bar), log scale."""
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        offsets = [group + (index - (len(series) - 1) / 2) * width for group in range(len(groups))]
        ax.bar(offsets, values, width, label=name, color=f"C{index}")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def gpu_time(tables: list[Table]) -> Path:
    table = find(tables, "On a GPU", "problem")
    groups = ["64-512-512-64\nbatch 4096", "32-256-256-32\nT = 1", "T = 10", "T = 50"]
    series = {name: [number(cell) for cell in table.column(name)] for name in table.columns[1:]}
    fig, ax = plt.subplots(figsize=(10, 4.2))
    grouped_bars(ax, groups, series, "training iteration [ms], log scale")
    ax.set_title(f"Forward + backward of one training iteration, dopri5, float32 ({GPU})")
    return save(fig, "bench_gpu_time.png")


def gpu_memory(tables: list[Table]) -> Path:
    table = find(tables, "On a GPU", "problem (forward steps)")
    horizons = [(1.0, 1), (10.0, 2), (50.0, 3), (200.0, 4)]  # (T, row) of the 32-256-256-32 model
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for index, name in enumerate(table.columns[1:]):
        points = [(T, number(table.rows[row][index + 1])) for T, row in horizons]
        points = [(T, value) for T, value in points if value == value]  # NaN: not measured
        ax.plot([T for T, _ in points], [value for _, value in points], "o-", color=f"C{index}", label=name)
    ax.set(xscale="log", yscale="log", xlabel="horizon T (forward steps 4 / 12 / 29 / 66)",
           ylabel="peak memory [MiB], log scale",
           title=f"Peak memory of one training iteration, MLP 32-256-256-32, batch 2048 ({GPU})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return save(fig, "bench_gpu_memory.png")


def export_latency(tables: list[Table]) -> Path:
    table = find(tables, "Export and serving latency", "model")
    groups = [f"{model}\nbatch {batch}".replace(", learned remainder", "").replace(", ", "\n")
              for model, batch in zip(table.column("model"), table.column("batch"))]
    series = {runtime: [number(cell) for cell in table.column(column)]
              for runtime, column in (("onnxruntime", "ort / eager"), ("TorchScript", "TorchScript / eager"))}
    fig, ax = plt.subplots(figsize=(12, 4.2))
    grouped_bars(ax, groups, series, "latency / eager PyTorch, log scale")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.tick_params(axis="x", labelsize="small")
    ax.set_title("Serving latency relative to eager PyTorch (1 thread, CPU; below the dashed line: faster)")
    return save(fig, "bench_export_latency.png")


def tlnode_speed(tables: list[Table]) -> Path:
    table = find(tables, "TL-NODE training speed", "task")
    kinds = table.column("TL-NODE")
    tasks = [task.split(" (")[0] for task, kind in zip(table.column("task"), kinds) if kind == "eager"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, (column, goal) in zip(axes, (("vs odegrad dopri5 (goal ≥ 5x)", 5.0),
                                         ("vs torchdiffeq dopri5 (goal ≥ 10x)", 10.0))):
        series = {kind: [number(cell) for cell, k in zip(table.column(column), kinds) if k == kind]
                  for kind in ("eager", "compiled")}
        grouped_bars(ax, tasks, series, "speed-up to the target test loss, log scale")
        ax.axhline(goal, color="k", lw=0.8, ls="--", label=f"goal {goal:g}x")
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_title(f"TL-NODE {column.split(' (')[0]}")
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle("TL-NODE time to target vs dopri5 (median of 3 seeds, 2 shared AMD EPYC cores)")
    return save(fig, "bench_tlnode_speed.png")


def save(fig, name: str) -> Path:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIGURES / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return FIGURES / name


def main() -> None:
    tables = read_tables(PAGE.read_text(encoding="utf-8"))
    for draw in (gpu_time, gpu_memory, tlnode_speed, export_latency):
        print(f"wrote {draw(tables)}")


if __name__ == "__main__":
    main()
