"""TorchScript export round trips, metadata, refusals and damaged archives."""

from __future__ import annotations

import pytest
import torch
from odegrad.export import MLPField, load_torchscript, to_torchscript
from torch import nn

from odegrad.errors import ExportError
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import LearnedMidpoint


def _round_trip(model: nn.Module, path, dim: int, dtype: torch.dtype) -> dict:
    module, meta = load_torchscript(path)
    generator = torch.Generator().manual_seed(3)
    for batch in (1, 7, 256):
        x = torch.randn(batch, dim, generator=generator, dtype=torch.float64).to(dtype)
        with torch.no_grad():
            torch.testing.assert_close(module(x), model(x), atol=1e-6 if dtype == torch.float32 else 1e-12,
                                       rtol=1e-5)
    return meta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neural_ode_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    model = NeuralODE(MLPField(3, hidden=8, layers=1, time_dependent=True), (0.0, 0.5, 1.0), method="rk4",
                      options={"step_size": 0.25}, return_trajectory=True).to(dtype)
    path = tmp_path / "node.pt"
    result = to_torchscript(model, torch.randn(5, 3, dtype=dtype), path)
    assert result.format == "torchscript" and result.parity.ok
    meta = _round_trip(model, path, 3, dtype)
    assert (meta["odegrad.method"], meta["odegrad.order"], meta["odegrad.steps"]) == ("rk4", "4", "4")


def test_tlnode_round_trip(tmp_path):
    torch.manual_seed(0)
    midpoint = LearnedMidpoint(2, hidden=8)
    nn.init.normal_(midpoint.net[-1].weight, std=0.3)
    model = TLNODE(MLPField(2, hidden=8, layers=1), order=2, steps=2, remainder=midpoint, mode="taylor")
    path = tmp_path / "tlnode.pt"
    to_torchscript(model, torch.randn(1, 2), path)
    meta = _round_trip(model, path, 2, torch.float32)
    assert (meta["odegrad.kind"], meta["odegrad.order"], meta["odegrad.steps"]) == ("tlnode", "2", "2")


def test_refusals_and_damaged_archives(tmp_path):
    with pytest.raises(ExportError, match="adaptive"):
        to_torchscript(NeuralODE(MLPField(2, hidden=4), method="bosh3"), torch.randn(2, 2), tmp_path / "a.pt")

    class Branchy(nn.Module):  # torch.jit.trace alone would silently record one branch
        def forward(self, x):
            return x.exp() if x.mean() > 0 else x

    with pytest.raises(ExportError, match="data-dependent control flow"):
        to_torchscript(Branchy(), torch.randn(2, 2), tmp_path / "b.pt")
    assert not list(tmp_path.iterdir())

    model = NeuralODE(MLPField(2, hidden=4, layers=1), method="euler", options={"step_size": 0.5})
    good = tmp_path / "good.pt"
    to_torchscript(model, torch.randn(2, 2), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    for bad in (truncated, garbage):
        with pytest.raises(ExportError, match="truncated or corrupted"):
            load_torchscript(bad)
