"""save_model/load_model, the `odegrad export` / `odegrad serve-check` commands and
serve_and_compare."""

from __future__ import annotations

import pytest
import torch
from odegrad.export import MLPField, load_model, register_module, save_model, serve_and_compare
from torch import nn

from odegrad.cli import main
from odegrad.errors import ExportError, InvalidInput
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import LearnedMidpoint


def _assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    models = [
        NeuralODE(MLPField(3, hidden=8, layers=2, activation="softplus", time_dependent=True), (0.0, 0.5, 1.0),
                  method="heun", options={"grid": [0.0, 0.25, 0.5, 1.0]}, return_trajectory=True),
        TLNODE(MLPField(3, hidden=8, layers=1), order=2, steps=3, horizon=0.5, remainder=LearnedMidpoint(3, 4, 1),
               mode="taylor").double(),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), NeuralODE(MLPField(3, 4), method="dopri5"), nn.Linear(3, 1)),
    ]
    for i, model in enumerate(models):
        dtype = next(model.parameters()).dtype
        x = torch.randn(4, 2 if i == 2 else 3, dtype=dtype)
        save_model(model, tmp_path / f"m{i}.pt", x)
        loaded, config = load_model(tmp_path / f"m{i}.pt")
        assert config["input_shape"] == [x.shape[1]] and config["dtype"] == str(dtype)[6:]
        assert type(loaded) is type(model) and not loaded.training
        _assert_same(model.eval(), loaded, x)


def test_save_refuses_unknown_architectures_and_load_refuses_bad_files(tmp_path):
    class Custom(nn.Module):
        def __init__(self, width: int = 2):
            super().__init__()
            self.width = width
            self.lin = nn.Linear(width, width)

        def forward(self, t, y):
            return self.lin(y)

        def export_config(self):
            return {"width": self.width}

    model = NeuralODE(Custom(), method="rk4")
    with pytest.raises(ExportError, match="register_module"):
        save_model(model, tmp_path / "m.pt", torch.randn(2, 2))
    assert not list(tmp_path.iterdir())
    register_module(Custom, name="test_export_cli.Custom")
    save_model(model, tmp_path / "m.pt", torch.randn(2, 2))
    _assert_same(model, load_model(tmp_path / "m.pt")[0], torch.randn(3, 2))
    with pytest.raises(InvalidInput, match="export_config"):
        register_module(nn.Linear)

    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="truncated or corrupted"):
        load_model(tmp_path / "truncated.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(ExportError, match="not written by odegrad.export.save_model"):
        load_model(tmp_path / "plain.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")  # a pickled module is never unpickled
    with pytest.raises(ExportError, match="holds pickled Python objects") as refused:
        load_model(tmp_path / "pickled.pt")
    assert "weights_only" not in str(refused.value)


def test_cli_export_and_serve_check(tmp_path, capsys):
    torch.manual_seed(0)
    model = TLNODE(MLPField(2, hidden=8, layers=1), order=1, steps=2, remainder=LearnedMidpoint(2, 4, 1),
                   mode="taylor")
    save_model(model, tmp_path / "model.pt", torch.randn(2, 2))
    onnx_path, ts_path = tmp_path / "model.onnx", tmp_path / "model.ts"
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(onnx_path)]) == 0
    assert main(["export", str(tmp_path / "model.pt"), "--format", "torchscript", "--out", str(ts_path)]) == 0
    out = capsys.readouterr().out
    assert "wrote onnx model" in out and "wrote torchscript model" in out and "method: taylor" in out

    for path in (onnx_path, ts_path):
        code = main(["serve-check", str(path), "--batch", "1,7", "--repeats", "3", "--threads", "1",
                     "--model", str(tmp_path / "model.pt")])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "parity: ok" in out and "kind=tlnode" in out and "samples/s" in out
        rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("1", "7")]
        assert [r[0] for r in rows] == ["1", "7"] and all(float(r[1]) > 0 for r in rows)


def test_cli_bad_input_exits_2(tmp_path, capsys, monkeypatch):
    from odegrad.export import _files

    save_model(NeuralODE(MLPField(2, hidden=4), method="dopri5"), tmp_path / "adaptive.pt", torch.randn(2, 2))
    adaptive = ["export", str(tmp_path / "adaptive.pt"), "--format", "torchscript", "--out", str(tmp_path / "x.pt")]
    assert main(adaptive) == 2  # TorchScript has no loop for the adaptive step-size control
    assert "adaptive step-size method" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert main(["serve-check", str(tmp_path / "bad.onnx")]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    for argv in (["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")],
                 ["export", str(tmp_path / "bad.onnx"), "--out", str(tmp_path / "x.onnx")],  # wrong kind
                 ["serve-check", str(tmp_path / "missing.onnx")],
                 ["serve-check", str(tmp_path)]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.startswith(f"odegrad {argv[0]}: error: ")
    for flags in (["export", "m.pt", "--out", "x.onnx", "--batch", "0"], ["serve-check", "x.onnx", "--batch", "1,x"],
                  ["serve-check", "x.onnx", "--repeats", "0"], ["serve-check", "x.onnx", "--threads", "-1"]):
        with pytest.raises(SystemExit) as parsed:
            main(flags)
        assert parsed.value.code == 2, flags
    capsys.readouterr()
    save_model(_fixed_step_model(), tmp_path / "model.pt", torch.randn(2, 2))
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = _files.os.access
    monkeypatch.setattr(_files.os, "access", lambda p, mode: real_access(p, mode) and str(p) != str(locked))
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(locked / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == f"odegrad export: error: cannot write {locked / 'm.onnx'}: the directory {locked} is not writable\n"


def test_cli_model_that_raises_exits_2_without_a_traceback(tmp_path, capsys):
    class Raising(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

        def export_config(self):
            return {}

    register_module(Raising, name="test_export_cli.Raising")
    save_model(Raising(), tmp_path / "raising.pt", torch.randn(2, 2))
    assert main(["export", str(tmp_path / "raising.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err == ("odegrad export: error: the model raised on example_input of shape "
                                       "(2, 2) (RuntimeError: boom); pass an input the model accepts\n")


def _fixed_step_model() -> NeuralODE:
    return NeuralODE(MLPField(2, hidden=4, layers=1), method="rk4", options={"step_size": 0.5})


def test_cli_parity_failure_exits_1(tmp_path, capsys, monkeypatch):
    from odegrad.export import _onnx

    torch.manual_seed(0)
    save_model(_fixed_step_model(), tmp_path / "model.pt", torch.randn(2, 2))
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    save_model(_fixed_step_model(), tmp_path / "other.pt", torch.randn(2, 2))  # other weights
    assert main(["serve-check", str(tmp_path / "m.onnx"), "--batch", "2", "--repeats", "1",
                 "--model", str(tmp_path / "other.pt")]) == 1
    assert "parity: FAILED" in capsys.readouterr().out
    original = _onnx.OnnxModel.__call__
    monkeypatch.setattr(_onnx.OnnxModel, "__call__", lambda self, x: original(self, x) + 1e-3)
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m2.onnx")]) == 1
    assert "does not reproduce PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "m2.onnx").exists()


def test_serve_and_compare(tmp_path):
    torch.manual_seed(0)
    model = NeuralODE(MLPField(2, hidden=8, layers=1), method="rk4", options={"step_size": 0.5})
    report = serve_and_compare(model, torch.randn(3, 2), path=tmp_path / "demo.onnx", batch_sizes=(1, 16),
                               repeats=3, threads=1)
    assert report.ok and report.path == tmp_path / "demo.onnx" and report.path.is_file()
    assert [row.batch for row in report.rows] == [1, 16]
    assert all(row.ratio > 0 and row.parity.max_abs_diff < 1e-5 for row in report.rows)
    text = str(report)
    assert "neural_ode" in text and "rk4" in text and "ratio" in text


USER_FIELDS = '''
import torch
from torch import nn

import odegrad
from odegrad.export import register_module


@register_module
class SineField(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.lin = nn.Linear(dim, dim)

    def forward(self, t, y):
        return torch.sin(self.lin(y))

    def export_config(self):
        return {"dim": self.dim}


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.field = SineField(2)
        self.register_buffer("t", torch.tensor([0.0, 1.0]))

    def forward(self, x):
        return odegrad.odeint(self.field, x, self.t, method="rk4", options={"step_size": 0.25})[-1]


def build():
    torch.manual_seed(0)
    return UserModel(), torch.randn(3, 2)


def build_model_only():
    return build()[0]


def broken():
    raise RuntimeError("no checkpoint")
'''


@pytest.fixture
def user_fields(tmp_path, monkeypatch):
    """A module ``cli_user_fields`` (a registered field and a torchdiffeq-style model) next to the
    caller, as a user's package would be; it is forgotten (unimported, unregistered) afterwards."""
    import sys

    from odegrad.export import _serialization

    (tmp_path / "cli_user_fields.py").write_text(USER_FIELDS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_serialization, "_REGISTERED", dict(_serialization._REGISTERED))
    yield tmp_path
    sys.modules.pop("cli_user_fields", None)


def test_cli_imports_the_module_that_registers_a_custom_field(user_fields, capsys):
    import sys

    import cli_user_fields
    from odegrad.export import _serialization

    torch.manual_seed(0)
    model = NeuralODE(cli_user_fields.SineField(2), method="rk4", options={"step_size": 0.5})
    save_model(model, user_fields / "model.pt", torch.randn(2, 2))

    def forget() -> None:  # as in a fresh process: the module not imported, nothing registered
        del _serialization._REGISTERED["SineField"], sys.modules["cli_user_fields"]

    forget()
    export = ["export", "model.pt", "--out", "m.onnx"]
    assert main(export) == 2
    assert "'SineField' at config.func, which is not registered" in capsys.readouterr().err
    gradients = ["check", "model.pt", "--methods", "rk4", "--gradients", "direct,backsolve"]
    assert main(gradients) == 2 and "--import the module that registers it" in capsys.readouterr().err
    assert main([*gradients, "--import", "cli_user_fields"]) == 0
    assert "PASS" in capsys.readouterr().out
    forget()
    assert main([*export, "--import", "cli_user_fields"]) == 0
    assert "wrote onnx model" in capsys.readouterr().out
    check = ["serve-check", "m.onnx", "--batch", "1,5", "--repeats", "2", "--model", "model.pt"]
    forget()
    assert main(check) == 2
    assert main([*check, "--import", "cli_user_fields"]) == 0
    out = capsys.readouterr().out
    assert "parity: ok" in out and "eager ms" in out


def test_cli_builds_the_model_with_a_callable(user_fields, capsys):
    assert main(["export", "cli_user_fields:build", "--format", "torchscript", "--out", "m.ts"]) == 0
    out = capsys.readouterr().out
    assert "wrote torchscript model" in out and "kind: odeint" in out and "steps: 4" in out
    assert main(["serve-check", "m.ts", "--batch", "4", "--repeats", "2", "--model",
                 "cli_user_fields:build_model_only"]) == 0
    assert "parity: ok" in capsys.readouterr().out
    bad = {
        "cli_user_fields:build_model_only": "export needs the input's shape and dtype",
        "cli_user_fields:broken": "calling it raised RuntimeError: no checkpoint",
        "cli_user_fields:missing": "an attribute 'missing'",
        "no_such_module_xyz:build": "MODEL module",
    }
    for target, reason in bad.items():
        assert main(["export", target, "--out", "x.onnx"]) == 2, target
        err = capsys.readouterr().err
        assert err.startswith("odegrad export: error: ") and reason in err, err
    for command in (["export", "cli_user_fields:build", "--out", "x.onnx"], ["serve-check", "m.ts"],
                    ["check", "cli_user_fields:build"]):
        assert main([*command, "--import", "no_such_module_xyz"]) == 2, command
        assert "--import" in capsys.readouterr().err
    assert not (user_fields / "x.onnx").exists()
