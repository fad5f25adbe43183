"""Adaptive solvers (dopri5, tsit5, bosh3) exported with their step-size control as an ONNX Loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from odegrad.export import OnnxModel, to_onnx, to_torchscript
from odegrad.export._adaptive import AdaptiveNeuralODE
from odegrad.export._graph import export_program
from torch import nn

from odegrad import solve
from odegrad.errors import ExportError
from odegrad.models import NeuralODE
from odegrad.solvers import ALL_TABLEAUX, ExplicitRK, PIController

RTOL, ATOL = 1e-5, 1e-8


class Field(nn.Module):
    """A small random time-dependent MLP vector field."""

    def __init__(self, dim: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, dim)).to(dtype)

    def forward(self, t, y):
        return self.net(y) * (1 + t)


def _model(method: str, seed: int, times=(0.0, 0.4, 1.5), dtype=torch.float64, **options) -> NeuralODE:
    return NeuralODE(Field(seed=seed, dtype=dtype), t=list(times), method=method, rtol=RTOL, atol=ATOL,
                     options=options or None, return_trajectory=True).eval()


def _eager_steps(model: NeuralODE, x: torch.Tensor) -> tuple[int, int]:
    stats = solve(model.func, x, torch.tensor(model.times, dtype=x.dtype), method=model.method,
                  rtol=model.rtol, atol=model.atol, options=model.options).stats
    return stats.steps_accepted, stats.steps_rejected


def _close_to_solver_tolerance(got, expected) -> bool:
    return bool(np.all(np.abs(np.asarray(got) - np.asarray(expected)) <= ATOL + RTOL * np.abs(np.asarray(expected))))


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("times", [(0.0, 0.4, 1.5), (1.0, 0.3, -0.5)], ids=["forward", "backward"])
def test_loop_takes_the_eager_steps(method, times):
    model = _model(method, 1, times)
    x = torch.randn(7, 3, dtype=torch.float64)
    with torch.no_grad():
        ys, accepted, rejected = AdaptiveNeuralODE(model, with_counts=True)(x)
        expected = model(x)
    assert (int(accepted), int(rejected)) == _eager_steps(model, x)
    torch.testing.assert_close(ys, expected, rtol=1e-12, atol=1e-12)


def test_first_step_option_and_pi_gains_are_followed():
    model = _model("dopri5", 4, first_step=1.0, controller=PIController(beta1=0.7, beta2=0.4))
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        ys, accepted, rejected = AdaptiveNeuralODE(model, with_counts=True)(x)
        torch.testing.assert_close(ys, model(x), rtol=1e-12, atol=1e-12)
    assert (int(accepted), int(rejected)) == _eager_steps(model, x)
    assert int(rejected) > 0  # a first step of 1.0 is too long at this tolerance


def test_step_t_and_a_tableau_that_is_not_fsal_take_the_eager_steps():
    """The traced driver lands on step_t stops as the eager one does, and drives any adaptive
    step solver: here Heun–Euler 2(1), an embedded pair whose last stage is not reused."""
    heun_euler = ExplicitRK(replace(ALL_TABLEAUX["heun"], name="heun_euler", b_error=(-0.5, 0.5)))
    x = torch.randn(4, 3, dtype=torch.float64)
    for model in (_model("dopri5", 14, step_t=[0.7, 0.2]), _model(heun_euler, 15)):
        with torch.no_grad():
            ys, accepted, rejected = AdaptiveNeuralODE(model, with_counts=True)(x)
            torch.testing.assert_close(ys, model(x), rtol=1e-12, atol=1e-12)
        assert (int(accepted), int(rejected)) == _eager_steps(model, x)


def test_max_steps_leaves_unreached_times_nan():
    model = _model("dopri5", 5, max_steps=3)
    with torch.no_grad():
        ys, accepted, rejected = AdaptiveNeuralODE(model, with_counts=True)(torch.randn(2, 3, dtype=torch.float64))
    assert int(accepted) + int(rejected) == 3
    assert torch.isfinite(ys[0]).all() and torch.isnan(ys[-1]).all()


@pytest.fixture(scope="module")
def exported_dopri5():
    model = _model("dopri5", 6)
    loop = AdaptiveNeuralODE(model, with_counts=True).eval()
    program = export_program(loop, torch.randn(2, 3, dtype=torch.float64), dynamic_batch=True)
    proto = torch.onnx.export(program, dynamo=True, optimize=True).model_proto
    return model, proto


def test_onnx_loop_matches_pytorch_steps_and_values(exported_dopri5):
    model, proto = exported_dopri5
    assert "Loop" in {node.op_type for node in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for seed, batch in ((7, 1), (8, 7), (9, 256)):
        x = torch.randn(batch, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        ys, accepted, rejected = session.run(None, {name: x.numpy()})
        with torch.no_grad():
            expected = model(x)
        assert (int(accepted), int(rejected)) == _eager_steps(model, x)
        assert ys.shape == (3, batch, 3)
        assert _close_to_solver_tolerance(ys, expected.numpy())
        np.testing.assert_allclose(ys, expected.numpy(), rtol=1e-12, atol=1e-12)  # the same steps, in float64


@pytest.mark.parametrize(("method", "options"), [
    ("tsit5", None), ("bosh3", {"first_step": 0.05, "controller": PIController(beta1=0.7, beta2=0.4)})])
def test_to_onnx_exports_adaptive_neural_ode(method, options, tmp_path):
    model = NeuralODE(Field(seed=10, dtype=torch.float32), t=[0.0, 1.0], method=method, rtol=1e-5, atol=1e-6,
                      options=options)
    result = to_onnx(model, torch.randn(7, 3), tmp_path / "m.onnx")
    assert result.parity.ok
    assert result.metadata["odegrad.method"] == method
    assert result.metadata["odegrad.step_control"] == "loop"
    assert "Loop" in {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    x = torch.randn(256, 3)
    with torch.no_grad():
        expected = model(x).numpy()
    got = OnnxModel(tmp_path / "m.onnx", providers="cpu")(x.numpy())
    assert np.all(np.abs(got - expected) <= 1e-5 + 1e-4 * np.abs(expected))


def test_unsupported_adaptive_exports_are_refused(tmp_path):
    with pytest.raises(ExportError, match="adaptive"):
        to_torchscript(_model("dopri5", 11), torch.randn(2, 3, dtype=torch.float64), tmp_path / "m.pt")
    with pytest.raises(ExportError, match="jump_t"):
        AdaptiveNeuralODE(_model("dopri5", 12, jump_t=[0.5]))
    with pytest.raises(ExportError, match="supported methods"):
        AdaptiveNeuralODE(_model("rk4", 13))
