"""(10) Per-sample batch independence: in per-sample mode (a 2-D ``t``, one row of output times per
entry) an entry's outputs and its gradients — with respect to its y0, its times and the shared
parameters, through a loss on that entry alone — are the same (to 1e-12 in float64) whether it is
solved alone or inside any batch, in any position, with every gradient backend and every
traceable adaptive method. (In shared-step mode they are not: the batch shares one step size.)"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import odegrad
from odegrad.solvers import StepSolver, get_solver, solver_names

ADAPTIVE = [name for name in solver_names() if isinstance(get_solver(name), StepSolver)
            and get_solver(name).error_estimate and get_solver(name).traceable]
BACKENDS = ("direct", "backsolve", "gq", "interp")
ROUNDOFF = {"rtol": 1e-12, "atol": 1e-12}


class _Field(torch.nn.Module):
    """A tanh MLP field whose speed differs per entry (a fixed per-entry factor), time-dependent."""

    def __init__(self, dim: int, width: int, speeds: torch.Tensor, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, dim)).double()
        self.speeds = speeds

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.speeds[:, None] * self.net(y) * torch.cos(t)[:, None]


@st.composite
def _batches(draw):
    batch = draw(st.integers(2, 4))
    count = draw(st.integers(2, 5))
    rows = []
    for _ in range(batch):
        start = draw(st.floats(-1.0, 1.0))
        gaps = draw(st.lists(st.floats(0.05, 0.6), min_size=count - 1, max_size=count - 1))
        sign = draw(st.sampled_from((1.0, -1.0)))
        rows.append([start + sign * sum(gaps[:i]) for i in range(count)])
    speeds = draw(st.lists(st.floats(0.2, 3.0), min_size=batch, max_size=batch))
    entry = draw(st.integers(0, batch - 1))
    order = draw(st.permutations(range(batch)))
    return (torch.tensor(rows, dtype=torch.float64), torch.tensor(speeds, dtype=torch.float64), entry,
            list(order), draw(st.integers(0, 2**16)), draw(st.sampled_from(BACKENDS)), draw(st.sampled_from(ADAPTIVE)))


def _entry_result(field: _Field, y0, t, position: int, gradient: str, method: str):
    y0 = y0.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    ys = odegrad.odeint(field, y0, t, method=method, gradient=gradient, rtol=1e-7, atol=1e-9)
    mine = ys[position]
    loss = (mine * torch.linspace(-1.0, 1.0, mine.numel(), dtype=mine.dtype).reshape(mine.shape)).sum()
    grads = torch.autograd.grad(loss, (y0, t, *field.parameters()))
    return mine.detach(), grads[0][position], grads[1][position], grads[2:]


@given(case=_batches())
def test_an_entry_is_independent_of_its_batch(case):
    t, speeds, entry, order, seed, gradient, method = case
    batch, dim = len(t), 3
    y0 = torch.randn(batch, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    field = _Field(dim, 8, speeds, seed)
    alone = _Field(dim, 8, speeds[[entry]], seed)
    alone.net = field.net
    reference = _entry_result(alone, y0[[entry]], t[[entry]], 0, gradient, method)
    shuffled = _Field(dim, 8, speeds[order], seed)
    shuffled.net = field.net
    result = _entry_result(shuffled, y0[order], t[order], order.index(entry), gradient, method)
    label = f"{method}/{gradient}, entry {entry} of {batch} at {order.index(entry)}"
    for what, got, expected in zip(("ys", "dL/dy0", "dL/dt"), result[:3], reference[:3]):
        torch.testing.assert_close(got, expected, **ROUNDOFF, msg=f"{label}: {what}")
    for got, expected in zip(result[3], reference[3]):
        torch.testing.assert_close(got, expected, **ROUNDOFF, msg=f"{label}: dL/dθ")
