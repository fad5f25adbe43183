"""The ``taylor`` integrator and TLNODE: convergence order, learned remainder, gradients, errors."""

import math
import re

import pytest
import torch
from torch import nn

import odegrad
from odegrad.errors import InvalidInput, TaylorModeUnsupported, UnsupportedCombination
from odegrad.gradients import Backsolve
from odegrad.models import TLNODE
from odegrad.solvers import LearnedMidpoint, Taylor

F64 = torch.float64


@pytest.fixture
def one_thread():
    """Small models train fastest single-threaded (and far faster on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _solve_error(order: int, h: float) -> float:
    # y' = cos(t) y + y², nonautonomous and nonlinear; reference by tight dopri5
    f = lambda t, y: torch.cos(t) * y + 0.3 * y * y
    y0 = torch.tensor([0.8, -0.5], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ref = odegrad.odeint(f, y0, t, rtol=1e-12, atol=1e-13)[-1]
    got = odegrad.odeint(f, y0, t, method=Taylor(order=order), options={"step_size": h})[-1]
    return float((got - ref).abs().max())


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_plain_taylor_convergence_order(order):
    h = 0.05
    e1, e2 = _solve_error(order, h), _solve_error(order, h / 2)
    observed = math.log2(e1 / e2)
    assert abs(observed - order) < 0.25, (e1, e2, observed)


def test_registered_name_and_dense_output():
    f = lambda t, y: -y + torch.sin(t)
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 0.33, 0.5, 1.0], dtype=F64)
    ys = odegrad.odeint(f, y0, t, method="taylor", options={"step_size": 0.05})
    ref = odegrad.odeint(f, y0, t, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(ys, ref, atol=1e-5, rtol=0)  # 0.33 is off-grid: Taylor dense output


def test_jvp_mode_gives_the_same_steps():
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    f = lambda t, y: net(y) * torch.cos(t)
    y0 = torch.randn(3, 2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    a = odegrad.odeint(f, y0, t, method=Taylor(order=3, mode="taylor"), options={"step_size": 0.25})
    b = odegrad.odeint(f, y0, t, method=Taylor(order=3, mode="jvp"), options={"step_size": 0.25})
    torch.testing.assert_close(a, b, atol=1e-14, rtol=1e-12)


class Pendulum(nn.Module):
    def forward(self, t, y):
        return torch.stack([y[..., 1], -torch.sin(y[..., 0]) - 0.1 * y[..., 1]], dim=-1)


def test_learned_remainder_training_reduces_error(one_thread):
    torch.manual_seed(0)
    field = Pendulum()
    h = 0.4
    model = TLNODE(field, order=1, steps=1, horizon=h, remainder=LearnedMidpoint(2, hidden=16).double())
    plain = TLNODE(field, order=1, steps=1, horizon=h)
    states = torch.rand(256, 2, dtype=F64) * 4 - 2
    with torch.no_grad():
        target = odegrad.odeint(field, states, torch.tensor([0.0, h], dtype=F64), rtol=1e-10, atol=1e-12)[-1]
        before = float((model(states) - target).pow(2).mean())
        euler_error = float((plain(states) - target).pow(2).mean())
    optimizer = torch.optim.Adam(model.remainder.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = (model(states) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    after = float(loss.detach())
    assert before < euler_error  # the untrained midpoint (ξ = x + h/2·f) already beats Euler
    assert after < 0.3 * before, (before, after)


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()

    def forward(self, t, y):
        return self.net(y)


def test_direct_gradients_are_exact_for_the_discrete_map():
    torch.manual_seed(1)
    model = TLNODE(Field(), order=2, steps=2, horizon=0.5, remainder=LearnedMidpoint(2, hidden=4).double())
    for p in model.remainder.net[-1].parameters():  # leave the zero init so every weight matters
        nn.init.normal_(p, std=0.3)
    y0 = torch.randn(2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: model(y), (y0,))
    loss = model(y0.detach()).pow(2).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_backsolve_gradients_match_direct_through_taylor():
    torch.manual_seed(2)
    field = Field()
    y0 = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def grads(gradient):
        field.zero_grad()
        ys = odegrad.odeint(field, y0, t, method=Taylor(order=3), gradient=gradient,
                            options={"step_size": 0.02})
        ys.pow(2).sum().backward()
        return [p.grad.clone() for p in field.parameters()]

    direct = grads("direct")
    adjoint = grads(Backsolve(method="rk4"))
    for a, b in zip(direct, adjoint):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_tlnode_adjoint_backend_passes_params():
    torch.manual_seed(3)
    field = Field()
    model = TLNODE(field, order=3, steps=8, horizon=0.5, remainder=LearnedMidpoint(2).double(),
                   gradient="backsolve")
    reference = TLNODE(field, order=3, steps=8, horizon=0.5, remainder=LearnedMidpoint(2).double())
    y0 = torch.randn(4, 2, dtype=F64)
    model(y0).pow(2).sum().backward()
    got = [p.grad.clone() for p in field.parameters()]
    field.zero_grad()
    reference(y0).pow(2).sum().backward()
    for a, b in zip(got, (p.grad for p in field.parameters())):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    # the remainder is not part of the ODE: the continuous adjoint gives it zero gradient
    assert all(float(p.grad.abs().sum()) == 0 for p in model.remainder.parameters())
    assert model.nfe > 0


def test_tlnode_export_has_dynamic_batch():
    torch.manual_seed(4)
    model = TLNODE(Field().float(), order=2, steps=2, horizon=0.3, remainder=LearnedMidpoint(2)).eval()
    x = torch.randn(4, 2)
    program = torch.export.export(model, (x,), dynamic_shapes={"y0": {0: torch.export.Dim("batch")}})
    x7 = torch.randn(7, 2)
    torch.testing.assert_close(program.module()(x7), model(x7))


def test_nfe_accounting():
    model = TLNODE(Field(), order=2, steps=3, remainder=LearnedMidpoint(2).double())
    model(torch.zeros(1, 2, dtype=F64))
    assert model.nfe == model.nfe_per_forward() == 3 * (2 + 3)


@pytest.mark.parametrize("kwargs, argument", [
    ({"order": 0}, "order"), ({"order": -2}, "order"), ({"order": 1.5}, "order"),
    ({"steps": 0}, "steps"), ({"steps": -1}, "steps"), ({"steps": 2.0}, "steps"),
    ({"horizon": 0.0}, "horizon"), ({"horizon": -1.0}, "horizon"), ({"horizon": float("inf")}, "horizon"),
    ({"mode": "fast"}, "mode"), ({"remainder": 3}, "remainder"),
])
def test_tlnode_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(InvalidInput) as info:
        TLNODE(Field(), **kwargs)
    assert info.value.argument == argument


def test_taylor_solver_rejects_bad_order():
    with pytest.raises(InvalidInput, match="order"):
        Taylor(order=0)
    with pytest.raises(InvalidInput, match="LearnedMidpoint dim"):
        LearnedMidpoint(0)


def test_unsupported_layer_in_explicit_taylor_mode():
    net = nn.Sequential(nn.Linear(2, 8), nn.GELU(), nn.Linear(8, 2)).double()
    field = type("GeluField", (nn.Module,), {"forward": lambda self, t, y: self.net(y)})()
    field.net = net
    y0 = torch.randn(2, 2, dtype=F64)
    strict = TLNODE(field, order=2, mode="taylor")
    with pytest.raises(TaylorModeUnsupported, match=r"'gelu' in layer net\.1 \(GELU\).*jvp"):
        strict(y0)
    auto = TLNODE(field, order=2, mode="auto")
    jvp = TLNODE(field, order=2, mode="jvp")
    torch.testing.assert_close(auto(y0), jvp(y0))


def test_adjoint_system_without_backward_method_is_explained():
    field = Field()
    y0 = torch.randn(2, 2, dtype=F64)
    calls = []
    counted_field = lambda t, y: calls.append(t) or field(t, y)
    with pytest.raises(UnsupportedCombination, match="Backsolve\\(method='rk4'\\)"):
        odegrad.odeint(counted_field, y0, torch.tensor([0.0, 0.5], dtype=F64), method=Taylor(order=2),
                       gradient="backsolve", options={"step_size": 0.25}, params=list(field.parameters()))
    assert not calls  # refused before the forward solve


def test_demo_trains_a_tlnode_and_validates_arguments(one_thread):
    from odegrad import demo
    from odegrad.cli import build_parser

    t, ys = demo.spiral_data(points=40, t_end=8.0)
    assert t.shape == (40,) and ys.shape == (40, 2)
    torch.manual_seed(0)
    model = TLNODE(demo.SpiralField(), horizon=float(t[1] - t[0]), remainder=LearnedMidpoint(2, hidden=16))
    curve = demo.train("TL-NODE", model.trajectory, model.parameters(), ys, iterations=6, progress=False)
    seconds, losses = zip(*curve)
    assert len(curve) == 7 and seconds[0] == 0.0 and list(seconds) == sorted(seconds)  # one checkpoint per step
    assert losses[-1] < losses[0]
    assert model(ys[:16]).shape == (16, 2)
    args = build_parser().parse_args(["demo", "--iters", "0"])
    with pytest.raises(InvalidInput, match="--iters"):
        args.run(args)


def test_demo_command_reports_target_and_trade_off_and_serves_the_model(one_thread, tmp_path, capsys):
    from odegrad.cli import main

    assert main(["demo", "--iters", "2", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the worse of the two models' best test MSEs + 5%" in out
    assert "| TL-NODE p=1 s=1 | " in out and "| dopri5 | " in out
    assert re.search(r"TL-NODE p=1 s=1 vs dopri5: speed-up to the target \d+\.\d\dx, final test MSE "
                     r"\d+\.\d% (above|below) dopri5's", out)
    assert (tmp_path / "spiral_tlnode.png").is_file() and (tmp_path / "spiral_tlnode.onnx").is_file()


def test_remainder_loss_trains_the_midpoint_under_an_adjoint_backend(one_thread):
    torch.manual_seed(5)
    model = TLNODE(Pendulum(), order=1, horizon=0.4, remainder=LearnedMidpoint(2, hidden=16).double(),
                   gradient="backsolve")
    states = torch.rand(128, 2, dtype=F64) * 4 - 2
    optimizer = torch.optim.Adam(model.remainder.parameters(), lr=1e-2)
    before = float(model.remainder_loss(states))
    for _ in range(100):
        optimizer.zero_grad()
        loss = model.remainder_loss(states)
        loss.backward()
        optimizer.step()
    assert float(model.remainder_loss(states)) < 0.5 * before
    with pytest.raises(InvalidInput, match="remainder"):
        TLNODE(Pendulum()).remainder_loss(states)


@pytest.mark.parametrize("gradient", ["direct", "backsolve"])
def test_nfe_counts_forward_passes(gradient):
    model = TLNODE(Field(), order=1, steps=2, remainder=LearnedMidpoint(2).double(), gradient=gradient)
    y0 = torch.zeros(1, 2, dtype=F64)
    model(y0)
    model.trajectory(y0, 3)
    assert int(model.forward_passes) == 4
    assert model.nfe == 4 * model.nfe_per_forward() == 4 * 2 * (1 + 2)
    assert "forward_passes" not in model.state_dict()  # a counter, not model state


def test_compiled_forward_and_training_step_do_not_recompile():
    from torch._dynamo.utils import counters

    torch.manual_seed(5)
    model = TLNODE(Field(), order=1, steps=2, horizon=0.5, remainder=LearnedMidpoint(2, hidden=4).double())
    y0 = torch.randn(6, 2, dtype=F64)
    expected = model(y0)
    torch._dynamo.reset()
    counters.clear()
    forward = torch.compile(model, fullgraph=True, backend="eager")
    loss_fn = torch.compile(lambda y: model.trajectory(y, 2).pow(2).mean(), fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            out = forward(y0)
            loss_fn(y0).backward()
    assert counters["stats"]["unique_graphs"] == 2  # one per compiled function, none recompiled
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert int(model.forward_passes) == 1 + 3 + 3 * 2
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for _ in range(3):
        model.trajectory(y0, 2).pow(2).mean().backward()
    for got, eager in zip(compiled_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, eager, rtol=1e-12, atol=1e-12)


def test_blocks_with_other_horizons_compile_in_one_process():
    # the second horizon makes dynamo trace the start times symbolically: no value checks on them
    torch._dynamo.reset()
    y0 = torch.randn(4, 2, dtype=F64)
    for horizon in (0.25, 0.5, 0.7):
        model = TLNODE(Field(), order=1, steps=1, horizon=horizon, remainder=LearnedMidpoint(2, hidden=4).double())
        loss = lambda y, model=model: model.trajectory(y, 3).pow(2).mean()
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(y0), loss(y0), rtol=1e-12, atol=1e-12)
