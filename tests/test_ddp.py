"""Scale-out training (issue 14, item 10): a NeuralODE trained under
``torch.nn.parallel.DistributedDataParallel`` (gloo, 2 CPU processes) with every gradient backend
gets, after DDP's all-reduce, the gradient a single process computes on the combined batch."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from odegrad.gradients import Backsolve, GaussQuadrature, Interpolation
from odegrad.models import NeuralODE

WORLD = 2
STEPS = 2
# Fixed steps and fixed node counts (interp: a check loose enough never to split a segment, a
# decision taken over the whole batch): every backend then does the same arithmetic per example
# whatever the batch it is in, so one process on the whole batch must agree with two on halves.
BACKENDS = {"direct": "direct", "backsolve": Backsolve(), "gq": GaussQuadrature(nodes=4),
            "interp": Interpolation(nodes=12, check_rtol=1.0, check_atol=1.0)}


class _Field(nn.Module):
    """A small tanh MLP vector field (float64), the same in every process."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.inner = nn.Linear(2, 16).double()
        self.outer = nn.Linear(16, 2).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.outer(torch.tanh(self.inner(y)))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    y0 = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    return y0, y0.flip(-1)


def _train(model: nn.Module, y0: torch.Tensor, target: torch.Tensor) -> list[list[torch.Tensor]]:
    """``STEPS`` SGD steps on the mean squared error; the gradients of every step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        ((model(y0) - target) ** 2).mean().backward()
        history.append([p.grad.detach().clone() for p in model.parameters()])
        optimizer.step()
    return history


def _model(gradient) -> NeuralODE:
    return NeuralODE(_Field(), t=(0.0, 1.0), method="rk4", gradient=gradient, options={"step_size": 0.1})


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        y0, target = _data()
        part = slice(rank * len(y0) // WORLD, (rank + 1) * len(y0) // WORLD)
        results = {}
        for name, gradient in BACKENDS.items():
            model = nn.parallel.DistributedDataParallel(_model(gradient))
            results[name] = _train(model, y0[part], target[part])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Leave without Python's teardown: freeing the last DDP Reducer destroys gloo's process group,
    # whose destructor joins a worker thread that waits for the GIL the freeing thread holds (a
    # deadlock in torch 2.13, seen once in CI runs). The results are written.
    os._exit(0)


def test_ddp_gradients_equal_the_single_process_gradient_of_the_combined_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    y0, target = _data()
    for name, gradient in BACKENDS.items():
        single = _train(_model(gradient), y0, target)
        for step in range(STEPS):
            for rank in ranks:
                for synced, expected in zip(rank[name][step], single[step]):
                    assert torch.allclose(synced, expected, rtol=1e-9, atol=1e-12), (name, step)
        assert any(float(g.abs().max()) > 1e-3 for g in single[0])  # a real gradient was compared
