"""The traced adaptive driver (one ``torch.while_loop``): the eager driver's steps and values,
its errors outside ``torch.compile`` and status codes inside, gradients through the loop, and
``torch.compile(fullgraph=True)`` of adaptive solves without recompilation."""

import pytest
import torch

import odegrad
from odegrad.errors import InvalidInput, MaxStepsExceeded, NonFiniteValue, UnsupportedCombination
from odegrad.models import NeuralODE
from odegrad.solvers import Status, get_solver, integrate_traced, make_config

from .support import assert_trains_like

F64 = torch.float64


class Field(torch.nn.Module):
    def __init__(self, dim: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim)).double()

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


FIELD = Field()  # one field for the parity cases: its compiled loop body is reused where the settings agree
FORWARD, REVERSE = (0.0, 0.5, 2.0), (1.0, 0.2, -1.5)


@pytest.mark.parametrize(("method", "times", "options"), [
    ("dopri5", FORWARD, {}), ("tsit5", FORWARD, {}), ("bosh3", FORWARD, {}),
    ("dopri5", REVERSE, {"step_t": [0.35, -0.7]}), ("bosh3", REVERSE, {"first_step": 0.5}),
    ("tsit5", FORWARD, {"controller": odegrad.solvers.PIController(beta1=0.7, beta2=0.4)})],
    ids=["dopri5", "tsit5", "bosh3", "dopri5-reverse-step_t", "bosh3-reverse-first_step", "tsit5-PI-gains"])
def test_traced_driver_takes_the_eager_steps(method, times, options):
    field = FIELD
    y0 = torch.randn(6, 2, dtype=F64)
    t = torch.tensor(times, dtype=F64)
    eager = odegrad.solve(field, y0, t, method=method, rtol=1e-6, atol=1e-8, options=options)
    traced = odegrad.solve(field, y0, t, method=method, rtol=1e-6, atol=1e-8,
                           options={**options, "driver": "traced"})
    assert traced.stats == eager.stats  # accepted, rejected and NFE
    assert int(traced.status) == Status.SUCCESS and eager.status is None
    torch.testing.assert_close(traced.ys, eager.ys, rtol=1e-12, atol=1e-12)
    assert traced.next_step == pytest.approx(eager.next_step, rel=1e-6)  # ratios agree to round-off


def test_traced_driver_raises_the_eager_errors():
    field = Field()
    y0 = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([0.0, 5.0], dtype=F64)
    with pytest.raises(MaxStepsExceeded, match="max_steps=4"):
        odegrad.odeint(field, y0, t, options={"driver": "traced", "max_steps": 4})
    blows_up = lambda t, y: torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)
    with pytest.raises(NonFiniteValue):
        odegrad.odeint(blows_up, y0, t, options={"driver": "traced"})


def test_a_failed_traced_solve_reports_its_status_and_nan_outputs():
    solver = get_solver("dopri5")
    config = make_config(solver, 1e-6, 1e-8, {"max_steps": 3})
    y0 = torch.randn(3, 2, dtype=F64)
    solution = integrate_traced(solver, Field(), y0, torch.linspace(0, 5, 4, dtype=F64), config,
                                raise_on_failure=False)
    assert int(solution.status) == Status.MAX_STEPS
    assert solution.stats.steps_accepted + solution.stats.steps_rejected == 3
    assert torch.equal(solution.ys[0], y0) and torch.isnan(solution.ys[-1]).all()


def test_driver_option_is_checked():
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidInput, match="driver"):
        odegrad.odeint(Field(), y0, t, options={"driver": "jit"})
    with pytest.raises(UnsupportedCombination, match="jump_t"):
        odegrad.odeint(Field(), y0, t, options={"driver": "traced", "jump_t": [0.5]})
    with pytest.raises(UnsupportedCombination, match="step solver"):
        odegrad.odeint(Field(), y0, t, method="torchdiffeq:dopri5", options={"driver": "traced"})
    with pytest.raises(UnsupportedCombination, match="eager driver"):
        odegrad.solve(Field(), y0, t, options={"driver": "traced"}, dense=True)


@pytest.mark.parametrize("y0_requires_grad", [True, False])
def test_gradients_through_the_loop_are_direct_backprop(y0_requires_grad):
    """With y0 not requiring grad, torch.while_loop's autograd alone would drop the parameter
    gradient (the initial carry does not require grad): the driver ties y0 to the graph."""
    field = Field()
    y0 = torch.randn(5, 2, dtype=F64, requires_grad=y0_requires_grad)
    t = torch.linspace(0, 2, 4, dtype=F64)
    inputs = [*field.parameters(), *([y0] if y0_requires_grad else [])]
    grads = {}
    for driver in ("eager", "traced"):
        ys = odegrad.odeint(field, y0, t, rtol=1e-6, atol=1e-8, options={"driver": driver})
        grads[driver] = torch.autograd.grad(ys.pow(2).sum(), inputs)
    for traced, eager in zip(grads["traced"], grads["eager"]):
        torch.testing.assert_close(traced, eager, rtol=1e-10, atol=1e-12)


def test_compiled_adaptive_neural_ode_is_one_graph_with_eager_values(no_recompiles):
    model = NeuralODE(Field(), t=(0.0, 0.5, 1.5), method="dopri5", rtol=1e-6, atol=1e-8, return_trajectory=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_trains_like(compiled, model, (model,), (5, 2), iterations=3)


def test_compiled_solve_reports_steps_and_status(no_recompiles):
    field = Field()

    def run(y0):
        solution = odegrad.solve(field, y0, torch.linspace(0, 1, 3, dtype=F64), method="tsit5", rtol=1e-6, atol=1e-8,
                                 options={"max_steps": 500})
        return solution.ys, solution.status, solution.stats.steps_accepted, solution.stats.steps_rejected

    y0 = torch.randn(4, 2, dtype=F64)
    ys, status, accepted, rejected = torch.compile(run, fullgraph=True, backend="aot_eager")(y0)
    eager = odegrad.solve(field, y0, torch.linspace(0, 1, 3, dtype=F64), method="tsit5", rtol=1e-6, atol=1e-8)
    assert int(status) == Status.SUCCESS
    assert (int(accepted), int(rejected)) == (eager.stats.steps_accepted, eager.stats.steps_rejected)
    torch.testing.assert_close(ys, eager.ys, rtol=1e-12, atol=1e-12)


def test_compiled_failure_is_a_status_not_an_exception():
    torch._dynamo.reset()
    field = Field()

    def run(y0):
        solution = odegrad.solve(field, y0, torch.tensor([0.0, 5.0], dtype=F64), options={"max_steps": 2})
        return solution.ys, solution.status

    ys, status = torch.compile(run, fullgraph=True, backend="aot_eager")(torch.randn(3, 2, dtype=F64))
    assert int(status) == Status.MAX_STEPS and torch.isnan(ys[-1]).all()


@pytest.mark.parametrize("gradient", ["backsolve", "gq", "interp"])
def test_adjoint_backends_run_under_compile_with_graph_breaks(gradient):
    """An adjoint backend whose backward pass cannot be traced (here: func is a closure, whose
    parameters torch.func cannot swap in) keeps its eager backward pass: under torch.compile
    (without fullgraph) it runs with a graph break and gives the eager gradients (module funcs
    compile into one graph: tests/test_traced_adjoint.py)."""
    torch._dynamo.reset()
    field = Field()
    params = tuple(field.parameters())
    t = torch.linspace(0, 1, 3, dtype=F64)
    y0 = torch.randn(4, 2, dtype=F64, requires_grad=True)

    def loss(y):
        return odegrad.odeint(lambda t, y: field(t, y), y, t, gradient=gradient, params=params, rtol=1e-7,
                              atol=1e-9).pow(2).sum()

    (compiled,) = torch.autograd.grad(torch.compile(loss, backend="eager")(y0), y0)
    (eager,) = torch.autograd.grad(loss(y0), y0)
    torch.testing.assert_close(compiled, eager, rtol=1e-9, atol=1e-12)


def test_a_func_torch_cannot_trace_into_the_loop_is_refused_by_name():
    class Transposed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.randn(2, 2, dtype=F64))

        def forward(self, t, y):
            return y @ self.A.T  # .T read at every stage: torch.while_loop's aliasing limitation

    y0, t = torch.randn(3, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(UnsupportedCombination, match=r"\.t\(\)"):
        odegrad.odeint(Transposed(), y0, t, options={"driver": "traced"})
    assert torch.isfinite(odegrad.odeint(Transposed(), y0, t)).all()  # the eager driver solves it


def test_implicit_methods_stay_on_the_eager_driver():
    """Newton's iteration count reads tensor values: implicit methods are not traceable, so the
    traced driver refuses them by name and "auto" keeps them eager under torch.compile."""
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    decay = lambda t, y: -y
    with pytest.raises(UnsupportedCombination, match="kvaerno5"):
        odegrad.odeint(decay, y0, t, method="kvaerno5", options={"driver": "traced"})
    assert not get_solver("kvaerno5").traceable and get_solver("dopri5").traceable


def test_a_norm_that_is_not_a_scalar_is_refused_by_name_in_the_traced_loop():
    y0, t = torch.ones(3, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidInput, match="norm"):
        odegrad.odeint(lambda t, y: -y, y0, t, options={"driver": "traced", "norm": lambda x: x.abs()})
