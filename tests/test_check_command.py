"""`odegrad check`: exit codes for bad targets, the pickle refusal, the help text, user settings,
a saved model's own method, non-smooth fields named beside the verdict, wrapped notes."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
from torch import nn

from odegrad.cli import main
from odegrad.testing import GradientReport, PairRun, check_gradients
from odegrad.testing._gradient_check import find_nonsmooth


class _Field(nn.Module):
    def __init__(self, activation: nn.Module):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), activation, nn.Linear(16, 2))

    def forward(self, t, y):
        return self.net(y)


def _problem(activation: nn.Module) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return _Field(activation), torch.randn(4, 2), torch.linspace(0.0, 1.0, 5)


def _write_target(tmp_path, monkeypatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("name, body, message", [
    ("check_target_syntax", "def make(:\n", "SyntaxError"),
    ("check_target_raises", "raise RuntimeError('no GPU here')\ndef make(): pass\n", "RuntimeError: no GPU here"),
    ("check_target_call", "def make():\n    raise KeyError('y0')\n", "calling it raised KeyError"),
])
def test_a_target_that_fails_to_load_exits_2(tmp_path, monkeypatch, capsys, name, body, message):
    _write_target(tmp_path, monkeypatch, name, body)
    assert main(["check", f"{name}:make"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odegrad check: invalid TARGET") and message in err


def test_a_func_that_raises_before_any_pair_runs_exits_2(tmp_path, monkeypatch, capsys):
    _write_target(tmp_path, monkeypatch, "check_target_broken_func", """
        import torch

        def broken(t, y):
            raise TypeError("func wants a dict")

        def make():
            return broken, torch.zeros(2), torch.tensor([0.0, 1.0])
        """)
    assert main(["check", "check_target_broken_func:make"]) == 2
    assert "cannot be checked: TypeError: func wants a dict" in capsys.readouterr().err


def test_a_relative_module_name_exits_2(capsys):
    assert main(["check", ".mymodel:make"]) == 2
    assert "importable module" in capsys.readouterr().err


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_refused_without_torchs_advice(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"func": _Exploit(str(marker)), "y0": torch.zeros(2)}, tmp_path / "evil.pt")
    assert main(["check", str(tmp_path / "evil.pt")]) == 2
    err = capsys.readouterr().err
    assert "holds pickled Python objects" in err and "save_model" in err
    assert "weights_only" not in err and not marker.exists()


def test_help_offers_only_what_is_accepted(capsys):
    with pytest.raises(SystemExit) as done:
        main(["check", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "torch.save'd" not in text and "odegrad.export.save_model" in text
    assert all(flag in text for flag in ("--rtol", "--atol", "--step-size", "--dtype"))


@pytest.mark.parametrize("activation, found", [
    (nn.ReLU(), ["relu in net.1 (ReLU)"]),
    (nn.LeakyReLU(), ["leaky_relu in net.1 (LeakyReLU)"]),
    (nn.Hardtanh(), ["hardtanh in net.1 (Hardtanh)"]),
    (nn.ELU(alpha=0.5), ["elu in net.1 (ELU)"]),
    (nn.ELU(), []),
    (nn.Softplus(), []),
    (nn.Tanh(), []),
])
def test_find_nonsmooth_names_layers(activation, found):
    func, y0, t = _problem(activation)
    assert find_nonsmooth(func, t[0], y0) == found


def test_find_nonsmooth_sees_functional_calls():
    lin = nn.Linear(2, 2)
    y0, t0 = torch.randn(3, 2), torch.tensor(0.0)
    assert find_nonsmooth(lambda t, y: abs(lin(y)), t0, y0) == ["abs"]
    assert find_nonsmooth(lambda t, y: torch.clamp(y, -1, 1) + torch.maximum(y, -y), t0, y0) == ["clamp", "maximum"]
    assert find_nonsmooth(lambda t, y: torch.tanh(lin(y)), t0, y0) == []


def test_relu_field_failure_says_why_and_what_passes():
    func, y0, t = _problem(nn.ReLU())
    report = check_gradients(func, y0, t, gradients=("direct", "gq"), fd_directions=0)
    assert report.nonsmooth == ["relu in net.1 (ReLU)"]
    assert not report.passed  # the kink makes direct and gq differ by ~1e-2, far past the error model
    text = report.table()
    verdict = text.splitlines()[-1]
    assert verdict.startswith("FAIL") and verdict.endswith("func is non-smooth, see the note above")
    note = " ".join(text.split())
    assert "non-smooth func: relu in net.1 (ReLU)" in note and "SiLU" in note
    suggested = float(note.split("tolerance=")[1].split()[0])
    assert suggested >= max(c.disagreement for c in report.comparisons)
    relaxed = check_gradients(func, y0, t, gradients=("direct", "gq"), fd_directions=0, tolerance=suggested)
    assert relaxed.passed, relaxed.table()
    smooth = check_gradients(*_problem(nn.Tanh()), gradients=("direct", "gq"), fd_directions=0)
    assert smooth.nonsmooth == [] and "non-smooth" not in smooth.table()


def test_user_settings_and_dtype_are_used(tmp_path, monkeypatch, capsys):
    _write_target(tmp_path, monkeypatch, "check_target_smooth", """
        import torch

        def make():
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
            return lambda t, y: net(y), torch.randn(3, 2), torch.linspace(0.0, 0.5, 3)
        """)
    args = ["check", "check_target_smooth:make", "--methods", "dopri5,rk4", "--gradients", "direct",
            "--fd-directions", "0", "--rtol", "1e-6", "--atol", "1e-8", "--step-size", "0.05"]
    assert main([*args, "--dtype", "float32"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "float32; rate scale" in out and "dopri5: rtol=1e-06, atol=1e-08; rk4: step_size=0.05" in out
    assert main([*args[:-2], "--step-size", "-1"]) == 2
    assert "invalid step_size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as parsed:
        main([*args, "--dtype", "float16"])
    assert parsed.value.code == 2


def test_a_saved_model_is_checked_with_its_own_method(tmp_path, capsys):
    from odegrad.export import MLPField, save_model

    from odegrad.models import NeuralODE

    torch.manual_seed(0)
    model = NeuralODE(MLPField(dim=2, hidden=4, layers=1).double(), t=(0.0, 0.5), method="rk4",
                      options={"step_size": 0.25})
    save_model(model, tmp_path / "node.pt", torch.randn(2, 2, dtype=torch.float64))
    main(["check", str(tmp_path / "node.pt"), "--gradients", "direct", "--fd-directions", "0"])
    labels = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert labels == ["dopri5/direct", "rk4/direct"]


def test_long_notes_wrap_at_word_boundaries():
    message = ("UnsupportedCombination: the taylor integrator cannot run the adjoint system of "
               "gradient='backsolve'; give Backsolve(backward_method='rk4') or use gradient='direct'")
    report = GradientReport(runs=[PairRun("taylor", "backsolve", "n/a", message=message)], comparisons=[], scale=1.0)
    table = report.table().splitlines()
    lines = table[1:table.index("")]
    assert len(lines) == 3
    column = lines[0].index("UnsupportedCombination")
    assert lines[1][:column].strip() == "" and all(len(line) - column <= 70 for line in lines)
    assert " ".join(line[column:] for line in lines) == message
