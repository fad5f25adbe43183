"""Export and save targets: unwritable paths fail early with ExportError, files get the mode
``open()`` would give, temporaries of killed exports are cleaned up, crafted configs are refused
before anything is allocated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from odegrad.export import MLPField, load_model, save_model, to_onnx, to_torchscript
from odegrad.export import _files as files

from odegrad.errors import ExportError, InvalidInput
from odegrad.models import NeuralODE


def _model() -> NeuralODE:
    return NeuralODE(MLPField(2, hidden=4, layers=1), method="rk4", options={"step_size": 0.5})


def _deny_writes_to(monkeypatch, denied) -> None:
    """Make ``os.access`` report ``denied`` as not writable (chmod cannot do that under root)."""
    real = os.access
    monkeypatch.setattr(files.os, "access",
                        lambda p, mode: real(p, mode) and not (str(p) == str(denied) and mode & os.W_OK))


def test_target_that_is_not_a_file_in_a_directory_is_invalid_input(tmp_path):
    (tmp_path / "plain").write_text("a regular file")
    with pytest.raises(InvalidInput, match="plain is not a directory"):
        save_model(_model(), tmp_path / "plain" / "m.pt", torch.randn(2, 2))
    with pytest.raises(InvalidInput, match="not a directory"):
        save_model(_model(), tmp_path, torch.randn(2, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


@pytest.mark.parametrize("export", [to_onnx, to_torchscript])
def test_unwritable_directory_fails_before_the_export(tmp_path, monkeypatch, export):
    from odegrad.export import _onnx, _torchscript

    _deny_writes_to(monkeypatch, tmp_path)
    for module in (_onnx, _torchscript):  # the export must not even start
        monkeypatch.setattr(module, "prepare_job", lambda *a, **k: pytest.fail("exported before checking"))
    with pytest.raises(ExportError, match=f"cannot write {tmp_path / 'm.out'}: the directory .* not writable"):
        export(_model(), torch.randn(2, 2), tmp_path / "m.out")


def test_read_only_file_is_refused_and_kept(tmp_path, monkeypatch):
    target = tmp_path / "m.pt"
    target.write_bytes(b"keep me")
    _deny_writes_to(monkeypatch, target)
    with pytest.raises(ExportError, match=f"cannot write {target}: the file is read-only"):
        save_model(_model(), target, torch.randn(2, 2))
    assert target.read_bytes() == b"keep me"


def test_unreadable_model_file_is_invalid_input(tmp_path, monkeypatch):
    save_model(_model(), tmp_path / "m.pt", torch.randn(2, 2))
    real = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: real(p, mode) and not (
        str(p) == str(tmp_path / "m.pt") and mode & os.R_OK))
    with pytest.raises(InvalidInput, match="a readable file .* it is not readable"):
        load_model(tmp_path / "m.pt")


def test_read_only_directory_with_real_permissions(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("chmod does not restrict this user (root)")
        with pytest.raises(ExportError, match="locked is not writable"):
            save_model(_model(), locked / "m.pt", torch.randn(2, 2))
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_model(_model(), tmp_path / "m.pt", torch.randn(2, 2))
        with open(tmp_path / "reference", "w"):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == (tmp_path / "reference").stat().st_mode & 0o777


def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")
    target.chmod(0o640)
    save_model(_model(), target, torch.randn(2, 2))
    assert target.stat().st_mode & 0o777 == 0o640
    assert load_model(target)[1]["input_shape"] == [2]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "m.pt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from odegrad.export import MLPField, save_model

        def killed(obj, path):
            open(path, "wb").write(b"half a model")
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = killed
        save_model(MLPField(2, hidden=4), {str(target)!r}, torch.randn(2, 2))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9, result.stderr
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.pt.odegrad-") and leftovers[0].endswith(".tmp")
    save_model(_model(), target, torch.randn(2, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_only_stale_temporaries_are_removed(tmp_path):
    target = tmp_path / "m.pt"
    host = files._HOST
    other = "0" * 8 if host != "0" * 8 else "1" * 8
    names = {
        "dead writer": f".m.pt.odegrad-{host}-{_dead_pid()}-aa.tmp",
        "live writer": f".m.pt.odegrad-{host}-{os.getpid()}-bb.tmp",  # a concurrent export
        "other host, old": f".m.pt.odegrad-{other}-1-cc.tmp",
        "other host, recent": f".m.pt.odegrad-{other}-1-dd.tmp",
        "another target": f".n.pt.odegrad-{host}-{_dead_pid()}-ee.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - files.STALE_AFTER - 10
    os.utime(tmp_path / names["other host, old"], (old, old))
    save_model(_model(), target, torch.randn(2, 2))
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"m.pt", names["live writer"], names["other host, recent"], names["another target"]}


def _crafted(tmp_path, edit) -> str:
    save_model(_model(), tmp_path / "m.pt", torch.randn(2, 2))
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    config = json.loads(payload["config"])
    edit(config)
    payload["config"] = json.dumps(config)
    torch.save(payload, tmp_path / "crafted.pt")
    return str(tmp_path / "crafted.pt")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["architecture"]["func"]["config"].update(hidden=60000),
     r"describes func.net.0.weight as \[60000, 2\] but stores \[4, 2\]"),
    (lambda c: c.update(input_shape=[200000, 200000]), "at most 1048576 elements per sample"),
    (lambda c: c.update(input_shape=[0, 2]), r"input_shape\[0\] is 0; expected an integer in \[1, "),
    (lambda c: c.update(input_shape=[3]), "does not end in the model's input width 2"),
], ids=["hidden", "input_shape", "empty", "width"])
def test_crafted_sizes_are_refused_before_allocation(tmp_path, monkeypatch, edit, message):
    from odegrad.export import _serialization

    path = _crafted(tmp_path, edit)
    real_build = _serialization.build_module

    def build(spec, where="config"):  # only the meta-device skeleton may be built
        assert torch.empty(0).device.type == "meta", "a crafted model was built for real"
        return real_build(spec, where)

    monkeypatch.setattr(_serialization, "build_module", build)
    with pytest.raises(ExportError, match=message):
        load_model(path)


def test_leading_input_dimensions_within_the_limit_load(tmp_path):
    path = _crafted(tmp_path, lambda c: c.update(input_shape=[5, 2]))
    assert load_model(path)[1]["input_shape"] == [5, 2]
