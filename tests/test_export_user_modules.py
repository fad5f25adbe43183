"""A user's own nn.Module that calls odegrad.odeint itself (the torchdiffeq way) exports to ONNX
and TorchScript when its output times are constants of the model; adaptive methods and times
computed from the input are refused with the reason."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from odegrad.export import OnnxModel, load_torchscript, to_onnx, to_torchscript
from torch import nn

import odegrad
from odegrad.errors import ExportError, UnsupportedCombination
from odegrad.solvers import StaticTimes


class Field(nn.Module):
    """dy/dt = net(y) · cos(t): time-dependent, so the step times reach the graph."""

    def __init__(self, dim: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, dim))

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


class UserModel(nn.Module):
    """What a torchdiffeq project looks like: times in a buffer (or elsewhere), odeint in forward."""

    def __init__(self, times: str = "buffer", method: str = "rk4", options: dict | None = None):
        super().__init__()
        self.field = Field()
        self.times, self.method = times, method
        self.options = {"step_size": 0.125} if options is None else options
        self.register_buffer("t", torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))

    def output_times(self, x):
        if self.times == "buffer":
            return self.t
        if self.times == "floats":
            return [0.0, 0.5, 1.0]
        if self.times == "constant":
            return torch.linspace(0.0, 1.0, 3)
        if self.times == "from input":
            return x[0, :2].abs().cumsum(0)
        return torch.linspace(0.0, 1.0, x.shape[0])  # "input shape"

    def forward(self, x):
        ys = odegrad.odeint(self.field, x, self.output_times(x), method=self.method, options=self.options)
        return ys[-1] + ys[1]


class Oscillator(nn.Module):
    """A tuple state (q, p) and two solves in one forward."""

    def __init__(self):
        super().__init__()
        self.spring = nn.Linear(3, 3)
        self.register_buffer("t", torch.tensor([0.0, 1.0]))

    def field(self, t, state):
        q, p = state
        return p, -self.spring(q)

    def forward(self, x):
        q, p = odegrad.odeint(self.field, (x, torch.zeros_like(x)), self.t, method="midpoint",
                              options={"grid": [0.0, 0.25, 0.6, 1.0]})
        back = odegrad.odeint(lambda t, y: -y, q[-1], [1.0, 0.0], method="euler", options={"step_size": 0.5})
        return back[-1] + p[-1]


def _eager(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


@pytest.mark.parametrize("times", ["buffer", "floats", "constant"])
def test_user_module_exports_to_onnx(tmp_path, times):
    torch.manual_seed(0)
    model = UserModel(times)
    result = to_onnx(model, torch.randn(4, 3), tmp_path / "m.onnx")
    assert result.parity.ok
    assert (result.metadata["odegrad.kind"], result.metadata["odegrad.method"]) == ("odeint", "rk4")
    assert result.metadata["odegrad.steps"] == "8"  # 1 / 0.125: the grid was read once, at export
    served = OnnxModel(tmp_path / "m.onnx")
    for batch in (1, 7, 256):
        x = torch.randn(batch, 3)
        np.testing.assert_allclose(served(x.numpy()), _eager(model, x), atol=1e-5, rtol=1e-4)
    assert StaticTimes.active() is None


def test_user_module_exports_to_torchscript(tmp_path):
    torch.manual_seed(0)
    model = UserModel("buffer", method="heun", options={"step_size": 0.25})
    result = to_torchscript(model, torch.randn(4, 3), tmp_path / "m.pt")
    assert result.parity.ok and result.metadata["odegrad.steps"] == "4"
    module, meta = load_torchscript(tmp_path / "m.pt")
    assert meta["odegrad.kind"] == "odeint"
    x = torch.randn(9, 3)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), _eager(model, x), atol=1e-6, rtol=1e-5)


def test_tuple_state_and_several_solves(tmp_path):
    torch.manual_seed(0)
    model = Oscillator()
    result = to_onnx(model, torch.randn(5, 3), tmp_path / "m.onnx")
    meta = result.metadata
    assert (meta["odegrad.kind"], meta["odegrad.method"], meta["odegrad.steps"]) == (
        "odeint+odeint", "midpoint+euler", "5")
    x = torch.randn(11, 3)
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx")(x.numpy()), _eager(model, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method,reason", [
    ("dopri5", r"odeint\(method='dopri5'\) inside the model: an adaptive step-size method.*fixed-step method"),
    ("torchdiffeq:rk4", r"only odegrad's own step solvers unroll"),
])
def test_adaptive_and_foreign_methods_are_refused(tmp_path, method, reason):
    options = None if method == "dopri5" else {"step_size": 0.25}
    model = UserModel("buffer", method=method, options=options or {})
    for export in (to_onnx, to_torchscript):
        with pytest.raises(ExportError, match=reason):
            export(model, torch.randn(4, 3), tmp_path / "m")
    assert not list(tmp_path.iterdir()) and StaticTimes.active() is None


@pytest.mark.parametrize("times,reason", [
    ("from input", r"computed from the model's input.*buffer, a constant tensor or Python floats"),
    ("input shape", r"4 output times when recorded.*7 now: the model's solves depend on the input"),
])
def test_times_computed_from_the_input_are_refused(tmp_path, times, reason):
    class LastRow(UserModel):
        def forward(self, x):
            return odegrad.odeint(self.field, x, self.output_times(x), method="rk4")[-1]

    with pytest.raises(ExportError, match=reason):
        to_onnx(LastRow(times), torch.randn(4, 3), tmp_path / "m.onnx")


def test_events_and_dense_output_are_refused(tmp_path):
    class Dense(nn.Module):
        def forward(self, x):
            solution = odegrad.solve(lambda t, y: -y, x, torch.tensor([0.0, 1.0]), method="rk4", dense=True)
            return solution.evaluate(torch.tensor(0.5))

    with pytest.raises(ExportError, match="dense output, events or regularization"):
        to_onnx(Dense(), torch.randn(4, 3), tmp_path / "m.onnx")


def test_static_times_outside_export():
    """The hook on its own: recorded times replay; a replay with another solve is refused."""
    func, y0 = (lambda t, y: -y), torch.ones(2)
    eager = odegrad.odeint(func, y0, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.5})
    static = StaticTimes()
    with static.record():
        recorded = odegrad.odeint(func, y0, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.5})
    torch.testing.assert_close(recorded, eager)
    assert [(s.method, s.times, s.steps) for s in static.solves] == [("rk4", [0.0, 1.0], 2)]
    with static.replay():
        replayed = odegrad.odeint(func, y0, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.5})
    torch.testing.assert_close(replayed, eager)
    with pytest.raises(ExportError, match="method 'rk4' with 2 output times when recorded and 'euler'"):
        with static.replay():
            odegrad.odeint(func, y0, torch.tensor([0.0, 1.0]), method="euler")
    with pytest.raises(ExportError, match="traced model solved 0 ODEs where the eager model solved 1"):
        with static.replay():
            pass
    assert StaticTimes.active() is None



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_user_module_exports_and_serves(tmp_path):
    torch.manual_seed(0)
    model = UserModel("buffer").cuda()
    assert to_onnx(model, torch.randn(4, 3, device="cuda"), tmp_path / "m.onnx").parity.ok
    x = torch.randn(64, 3, device="cuda")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UnsupportedCombination, match="onnxruntime-gpu"):
            OnnxModel(tmp_path / "m.onnx", providers="cuda")
        return
    served = OnnxModel(tmp_path / "m.onnx", providers="cuda")
    assert served.providers[0] == "CUDAExecutionProvider"
    with torch.no_grad():
        np.testing.assert_allclose(served(x.cpu().numpy()), model.eval()(x).cpu().numpy(), atol=1e-5, rtol=1e-4)
