"""examples/: every script runs with ``--quick`` and reports the target rule and the trade-off;
the shared harness computes targets, speed-ups and final-loss differences as it says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def harness():
    """examples/_harness.py, loaded from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("examples_harness", EXAMPLES / "_harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize("script, plot", [("lotka_volterra.py", "lotka_volterra.png"),
                                          ("digits_classification.py", "digits_classification.png"),
                                          ("density_cnf.py", "density_cnf.png")])
def test_example_runs_quick_and_explains_its_comparison(script, plot, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", "--no-progress", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "target test loss " in out and "= the worst of the runs' best test losses + " in out
    assert "| TL-NODE p=1 " in out and "| dopri5 | " in out
    assert " vs dopri5: speed-up to the target " in out and "final test loss " in out
    assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_states_target_rule_speed_up_and_final_loss_difference(harness):
    fast = harness.Run("fast", [(0.0, 0, 1.0), (1.0, 10, 0.5), (2.0, 20, 0.3)], nfe_per_forward=3)
    slow = harness.Run("slow", [(0.0, 0, 1.0), (4.0, 10, 0.4), (8.0, 20, 0.2)], nfe_per_forward=12)
    target = harness.common_target([fast, slow])
    assert target.value == pytest.approx(0.315)
    assert str(target) == "0.315 = the worst of the runs' best test losses + 5%"
    assert (fast.seconds_to(target.value), slow.seconds_to(target.value)) == (2.0, 8.0)
    report = harness.comparison_report([fast, slow], target, reference="slow")
    assert report.splitlines()[0] == "target test loss 0.315 = the worst of the runs' best test losses + 5%"
    assert "| fast | 2.00 | 4.00x | 3.0 | 2.00 | – | 0.3 |" in report
    assert report.splitlines()[-1] == "fast vs slow: speed-up to the target 4.00x, final test loss 50.0% above slow's."


def test_report_gives_differences_for_losses_that_can_be_negative(harness):
    a = harness.Run("a", [(0.0, 0, 0.5), (1.0, 5, -0.2)])
    b = harness.Run("b", [(0.0, 0, 0.5), (3.0, 5, -0.3)])
    target = harness.common_target([a, b], relative=0.0, absolute=0.05)
    assert target.value == pytest.approx(-0.15) and target.rule.endswith("best test losses + 0.05")
    last = harness.comparison_report([a, b], target, reference="b").splitlines()[-1]
    assert last == "a vs b: speed-up to the target 3.00x, final test loss 0.1 above b's."


def test_learning_curves_draw_the_target_in_matching_colours_with_the_legend_outside(harness):
    runs = [harness.Run(name, [(0.0, 0, 1.0), (1.0, 1, 0.5)]) for name in ("x", "y")]
    ax = Figure().subplots()
    harness.plot_learning_curves(ax, runs, "loss", harness.Target(0.6, "rule"))
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert [to_hex(lines[name].get_color()) for name in ("x", "y")] == [to_hex("C0"), to_hex("C1")]
    assert list(lines["target 0.6"].get_ydata()) == [0.6, 0.6]
    legend = ax.get_legend()
    assert [to_hex(h.get_color()) for h in legend.legend_handles[:2]] == [to_hex("C0"), to_hex("C1")]
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # right of the axes, off the data


def test_regularization_benchmark_runs_quick_and_reports_every_regularizer_per_task(tmp_path):
    script = EXAMPLES.parent / "benchmarks" / "bench_regularization.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--no-progress"], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| task | regularizer |"))
    for column in ("train time [s]", "NFE/prediction", "NFE x", "prediction [ms]", "loss change", "accuracy"):
        assert f"| {column} |" in header
    for task in ("digits", "lotka-volterra"):
        for name in ("unregularized", "local-unbiased", "local-biased", "RNODE", "Taylor-3"):
            assert sum(line.startswith(f"| {task} | {name} | ") for line in lines) == 1, (task, name)
        assert sum(line.startswith(f"{task} local-") and line.endswith(("goal met.", "goal not met."))
                   for line in lines) == 2


def test_compiled_loss_compiles_off_the_clock_and_names_the_run(harness, monkeypatch):
    compiled_with = {}

    def fake_compile(fn, **kwargs):
        compiled_with.update(kwargs)
        return fn

    monkeypatch.setattr(harness.torch, "compile", fake_compile)
    weight = harness.torch.ones(3, requires_grad=True)
    loss = lambda x: (weight * x).sum()
    run = harness.Run("TL")
    assert harness.compiled_loss(run, loss, None, (weight,), harness.CPU) is loss and run.compile_seconds == 0
    assert harness.compiled_loss(run, loss, "reduce-overhead", (weight,), harness.CPU) is loss
    assert compiled_with == {"fullgraph": True, "mode": "reduce-overhead"}
    assert run.name == "TL compiled (reduce-overhead)" and run.compile_seconds > 0
    assert weight.grad is not None  # the warm-up step ran forward and backward


def test_tlnode_benchmark_runs_seeds_in_parallel_and_summarises(tmp_path):
    script = EXAMPLES.parent / "benchmarks" / "bench_tlnode.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--tasks", "digits", "--seeds", "0", "1",
                             "--jobs", "2", "--compile", "none", "--no-breakdown"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "## digits, seed 0:" in out and "## digits, seed 1:" in out and "dopri5 rtol=0.0001 atol=1e-05" in out
    summary = out.split("## Summary")[1].splitlines()
    assert any(line.startswith("| task | target rule | TL-NODE run |") for line in summary)
    assert sum(line.startswith("| digits | worst best + 5% | s=1 |") for line in summary) == 1


def test_export_example_serves_both_blocks_with_onnxruntime_and_plots_parity(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "export_onnx.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    served = [line for line in result.stdout.splitlines() if "max |onnxruntime - PyTorch| = " in line]
    assert [line.split(":")[0] for line in served] == ["rk4, h = 0.1 (unrolled graph)", "dopri5 (ONNX Loop)"]
    assert all(float(line.rsplit("= ", 1)[1]) < 1e-4 for line in served)  # float32 parity, as to_onnx checks
    assert (tmp_path / "export_onnx.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stiff_robertson_example_runs_quick_and_reports_the_fit(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "stiff_robertson.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("kvaerno5 + interp: 1 iterations in ") and "rate error " in result.stdout
    assert (tmp_path / "stiff_robertson.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
