"""ONNX export round trips (fixed-step NeuralODE, TLNODE), refusals, validation, OnnxModel."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from odegrad.export import MLPField, OnnxModel, choose_providers, to_onnx
from torch import nn

from odegrad.errors import ExportError, InvalidInput, UnsupportedCombination
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import LearnedMidpoint

BATCHES = (1, 7, 256)
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def _eager(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _check_round_trip(model: nn.Module, path, dim: int, dtype: torch.dtype, atol: float) -> OnnxModel:
    served = OnnxModel(path)
    generator = torch.Generator().manual_seed(1)
    for batch in BATCHES:
        x = torch.randn(batch, dim, generator=generator, dtype=torch.float64).to(dtype)
        got = served(x.numpy())
        assert got.dtype == x.numpy().dtype
        np.testing.assert_allclose(got, _eager(model, x), atol=atol, rtol=1e-4)
    return served


NEURAL_ODE_CASES = [
    # method, options, field kwargs, output times, trajectory, dtype
    ("euler", {"step_size": 1 / 3}, {"activation": "tanh"}, (0.0, 1.0), False, torch.float32),
    ("midpoint", {"grid": [0.0, 0.3, 0.7, 1.0]}, {"activation": "softplus", "time_dependent": True},
     (0.0, 1.0), False, torch.float32),
    ("heun", {"step_size": 0.5}, {"activation": "silu"}, (0.0, 0.5, 1.0), True, torch.float32),
    ("rk4", {"step_size": 0.5}, {"activation": "relu", "time_dependent": True}, (0.0, -1.0), False, torch.float64),
]


@pytest.mark.parametrize("method,options,field,times,trajectory,dtype", NEURAL_ODE_CASES,
                         ids=[c[0] for c in NEURAL_ODE_CASES])
def test_neural_ode_round_trip(tmp_path, method, options, field, times, trajectory, dtype):
    torch.manual_seed(0)
    model = NeuralODE(MLPField(3, hidden=8, layers=1, **field), times, method=method, options=options,
                      return_trajectory=trajectory).to(dtype)
    path = tmp_path / "model.onnx"
    result = to_onnx(model, torch.randn(4, 3, dtype=dtype), path)
    assert result.parity.ok and path.is_file()
    served = _check_round_trip(model, path, 3, dtype, atol=1e-5 if dtype == torch.float32 else 1e-9)
    info = served.info()
    assert info["odegrad.method"] == method
    assert info["odegrad.order"] == str({"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method])
    expected_steps = {"euler": 3, "midpoint": 3, "heun": 2, "rk4": 2}[method]
    assert info["odegrad.steps"] == str(expected_steps)
    assert info["odegrad.inputs"] == [{"name": "input", "dtype": str(dtype)[6:], "shape": ["batch", 3]}]
    out_shape = [len(times), "batch", 3] if trajectory else ["batch", 3]
    assert info["odegrad.outputs"][0]["shape"] == out_shape
    assert served.dynamic_batch


TLNODE_CASES = [
    # order, steps, remainder, field kwargs, gradient, dtype
    (1, 2, True, {"activation": "tanh"}, "direct", torch.float32),
    (3, 1, False, {"activation": "tanh", "time_dependent": True}, "direct", torch.float64),
    (2, 1, True, {"activation": "sigmoid"}, "backsolve", torch.float32),
]


@pytest.mark.parametrize("order,steps,remainder,field,gradient,dtype", TLNODE_CASES,
                         ids=[f"p{c[0]}-n{c[1]}-{c[4]}" for c in TLNODE_CASES])
def test_tlnode_round_trip(tmp_path, order, steps, remainder, field, gradient, dtype):
    torch.manual_seed(0)
    midpoint = LearnedMidpoint(2, hidden=8) if remainder else None
    if midpoint is not None:  # a trained-looking remainder: the zero-initialised last layer is not
        nn.init.normal_(midpoint.net[-1].weight, std=0.3)
    model = TLNODE(MLPField(2, hidden=8, layers=1, **field), order=order, steps=steps, horizon=0.8,
                   remainder=midpoint, mode="taylor", gradient=gradient).to(dtype)
    path = tmp_path / "tlnode.onnx"
    to_onnx(model, torch.randn(3, 2, dtype=dtype), path)
    served = _check_round_trip(model, path, 2, dtype, atol=1e-5 if dtype == torch.float32 else 1e-9)
    info = served.info()
    assert (info["odegrad.kind"], info["odegrad.method"]) == ("tlnode", "taylor")
    assert (info["odegrad.order"], info["odegrad.steps"]) == (str(order), str(steps))
    assert info["odegrad.remainder"] == ("LearnedMidpoint" if remainder else "none")


def test_nested_block_exports_and_model_is_restored(tmp_path):
    torch.manual_seed(0)
    block = NeuralODE(MLPField(4, hidden=8, layers=1), method="rk4", options={"step_size": 0.5})
    model = nn.Sequential(nn.Linear(2, 4), block, nn.Linear(4, 1))
    model.train()
    path = tmp_path / "nested.onnx"
    to_onnx(model, torch.randn(5, 2), path)
    assert model[1] is block and model.training and block.func.training
    served = _check_round_trip(model.eval(), path, 2, torch.float32, atol=1e-5)
    assert served.info()["odegrad.steps"] == "2"


def test_static_batch_opset_and_predict(tmp_path):
    torch.manual_seed(0)
    model = NeuralODE(MLPField(2, hidden=8, layers=1), (0.0, 0.5, 1.0), method="midpoint",
                      options={"step_size": 0.5}, return_trajectory=True)
    path = tmp_path / "static.onnx"
    to_onnx(model, torch.randn(4, 2), path, dynamic_batch=False, opset=18)
    served = OnnxModel(path, providers="cpu")
    assert served.input_shape == (4, 2) and not served.dynamic_batch
    with pytest.raises(InvalidInput, match="input shape"):
        served(np.zeros((3, 2), np.float32))
    x = torch.randn(10, 2)
    out = served.predict(x)  # 10 rows in padded chunks of 4, joined on the trajectory's batch axis
    assert isinstance(out, torch.Tensor) and out.shape == (3, 10, 2)
    np.testing.assert_allclose(out.numpy(), _eager(model, x), atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = NeuralODE(MLPField(2, hidden=8, layers=1), method="heun", options={"step_size": 0.5})
    path = tmp_path_factory.mktemp("onnx") / "heun.onnx"
    to_onnx(model, torch.randn(2, 2), path)
    return model, path


def test_onnx_model_checks_input(exported):
    model, path = exported
    served = OnnxModel(path)
    with pytest.raises(InvalidInput, match=r"input dtype: got float64; expected float32"):
        served(np.zeros((2, 2)))
    with pytest.raises(InvalidInput, match=r"input shape: got \(2, 3\); expected \[batch, 2\]"):
        served(np.zeros((2, 3), np.float32))
    with pytest.raises(InvalidInput, match="input shape"):
        served(np.zeros((2,), np.float32))
    with pytest.raises(InvalidInput, match="numpy array or a torch.Tensor"):
        served([[0.0, 0.0]])
    x = torch.randn(300, 2)
    out = served.predict(x, batch_size=64)
    np.testing.assert_allclose(out.numpy(), _eager(model, x), atol=1e-5)
    with pytest.raises(InvalidInput, match="batch_size"):
        served.predict(x, batch_size=0)


def test_corrupted_and_truncated_files_raise_export_error(exported, tmp_path):
    _, path = exported
    data = path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model at all" * 10)
    flipped = tmp_path / "flipped.onnx"  # still well-formed protobuf: caught by the graph checksum
    middle = len(data) // 2
    flipped.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:])
    for bad in (truncated, garbage, flipped):
        with pytest.raises(ExportError, match="truncated or corrupted"):
            OnnxModel(bad)
    with pytest.raises(InvalidInput, match="an existing file"):
        OnnxModel(tmp_path / "missing.onnx")


def test_refusals_name_the_reason_and_the_alternative(tmp_path):
    field = MLPField(2, hidden=4, layers=1)
    adaptive = NeuralODE(field, method="dopri5", options={"jump_t": [0.5]})  # the ONNX Loop has no forced stops
    with pytest.raises(ExportError, match=r"adaptive NeuralODE.*jump_t.*not supported.*fixed-step method"):
        to_onnx(adaptive, torch.randn(2, 2), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match=r"adaptive.*jump_t"):  # also when nested
        to_onnx(nn.Sequential(adaptive), torch.randn(2, 2), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="only odegrad's own step solvers"):
        to_onnx(NeuralODE(field, method="torchdiffeq:rk4"), torch.randn(2, 2), tmp_path / "a.onnx")

    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(ExportError, match="data-dependent control flow"):
        to_onnx(Branchy(), torch.randn(2, 2), tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())


def test_float64_op_without_onnxruntime_kernel_is_reported(tmp_path):
    model = NeuralODE(MLPField(2, hidden=4, layers=1, activation="softplus"), method="euler").double()
    with pytest.raises(ExportError, match="Softplus.*export in float32"):
        to_onnx(model, torch.randn(2, 2, dtype=torch.float64), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_bad_arguments(tmp_path):
    model = NeuralODE(MLPField(2, hidden=4, layers=1), method="euler")
    x = torch.randn(2, 2)
    with pytest.raises(InvalidInput, match="opset"):
        to_onnx(model, x, tmp_path / "m.onnx", opset=9)
    with pytest.raises(InvalidInput, match="example_input"):
        to_onnx(model, x.numpy(), tmp_path / "m.onnx")
    with pytest.raises(InvalidInput, match="example_input dtype"):
        to_onnx(model, torch.ones(2, 2, dtype=torch.int64), tmp_path / "m.onnx")
    with pytest.raises(InvalidInput, match="batch dimension"):
        to_onnx(model, torch.tensor(1.0), tmp_path / "m.onnx")
    with pytest.raises(InvalidInput, match="does not exist"):
        to_onnx(model, x, tmp_path / "no_such_dir" / "m.onnx")
    with pytest.raises(InvalidInput, match="model"):
        to_onnx(lambda y: y, x, tmp_path / "m.onnx")
    with pytest.raises(InvalidInput, match="atol"):
        to_onnx(model, x, tmp_path / "m.onnx", atol=-1.0)


def test_failed_validation_leaves_no_file(tmp_path, monkeypatch):
    from odegrad.export import _onnx as onnx_export

    original = onnx_export.OnnxModel.__call__
    monkeypatch.setattr(onnx_export.OnnxModel, "__call__", lambda self, x: original(self, x) + 1e-3)
    model = NeuralODE(MLPField(2, hidden=4, layers=1), method="euler", options={"step_size": 0.5})
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous good file")
    with pytest.raises(ExportError, match="does not reproduce PyTorch.*not written"):
        to_onnx(model, torch.randn(2, 2), target)
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # temp file removed


def test_providers():
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(InvalidInput, match="providers"):
        choose_providers("tpu")
    if not HAS_CUDA_EP:
        with pytest.raises(UnsupportedCombination, match="onnxruntime-gpu"):
            choose_providers("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="needs onnxruntime-gpu with a CUDA device")
def test_cuda_provider_round_trip(exported):
    model, path = exported
    served = OnnxModel(path, providers="cuda")
    assert served.providers[0] == "CUDAExecutionProvider"
    x = torch.randn(256, 2)
    np.testing.assert_allclose(served(x).numpy(), _eager(model, x), atol=1e-5)


def test_odegrad_does_not_import_export():
    code = ("import json, sys, odegrad, odegrad.models, odegrad.cli; "
            "print(json.dumps(['odegrad.export' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [False]
