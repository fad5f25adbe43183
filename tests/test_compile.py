"""torch.compile of fixed-step NeuralODE blocks: one graph (fullgraph), the eager values and
gradients, no recompilation between calls of the same shape; and the loop's records: skipping
the stiffness estimate where nobody reads it leaves every step and value unchanged."""

import pytest
import torch

import odegrad
from export import UnrolledNeuralODE
from odegrad.models import NeuralODE

from .support import train_step


class Field(torch.nn.Module):
    def __init__(self, dim: int = 3):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, dim))

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


@pytest.mark.parametrize("method, options", [("rk4", {"step_size": 0.25}), ("euler", {"grid": [0.0, 0.3, 1.0]}),
                                             ("midpoint", {"step_size": 0.4, "interp": "linear"})])
def test_compiled_neural_ode_matches_eager_without_recompiling(method, options, no_recompiles):
    model = NeuralODE(Field(), t=(0.0, 0.5, 1.0), method=method, options=options, return_trajectory=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for _ in range(3):  # new values, same shapes: error_on_recompile makes a recompilation fail
        x = torch.randn(5, 3)
        out, grads = train_step(compiled, x)
        expected, expected_grads = train_step(model, x)
        torch.testing.assert_close(out, expected)
        for grad, expected_grad in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected_grad)
        with torch.no_grad():  # a training step: the parameters change in place between calls
            for parameter, grad in zip(model.parameters(), grads):
                parameter -= 0.1 * grad


def test_compiled_neural_ode_inductor():
    torch._dynamo.reset()
    model = NeuralODE(Field(2), method="euler", options={"step_size": 0.5})
    x = torch.randn(4, 2)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_fixed_step_neural_ode_is_odeint():
    """The block's unrolled path gives odeint's values, NFE and gradients exactly."""
    field = odegrad.solvers.CountedFunc(Field())
    model = NeuralODE(field, t=(0.0, 1.0), method="rk4", options={"step_size": 0.1})
    x = torch.randn(4, 3, requires_grad=True)
    out = model(x)
    nfe = field.nfe
    (grad,) = torch.autograd.grad(out.sum(), x)
    expected = odegrad.odeint(field, x, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.1})[-1]
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
    assert field.nfe == 2 * nfe == 2 * 41  # 10 steps of 4 stages, and the first stage


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
def test_stiffness_records_change_no_step(method):
    field = Field().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    options = {"step_size": 0.1} if method == "rk4" else None
    full = odegrad.solve(field, y0, t, method=method, rtol=1e-6, atol=1e-8, options=options)
    config = odegrad.solvers.make_config(odegrad.solvers.get_solver(method), 1e-6, 1e-8, options)
    config.record_stiffness = False
    light = odegrad.solvers.get_solver(method).integrate(field, y0, t, config)
    assert torch.equal(full.ys, light.ys)
    assert full.stats == light.stats
    assert torch.equal(full.steps.t, light.steps.t) and torch.equal(full.steps.h, light.steps.h)
    assert torch.isfinite(full.steps.stiffness).all() and torch.isnan(light.steps.stiffness).all()
    assert torch.equal(odegrad.odeint(field, y0, t, method=method, rtol=1e-6, atol=1e-8, options=options), full.ys)


def test_backward_solves_record_no_stiffness():
    assert not odegrad.solvers.IntegrationConfig().for_backward().record_stiffness


def test_fixed_step_neural_ode_steps_on_odeints_grid_in_float32():
    """The unrolled path reads the block's times rounded to y0's dtype, as odeint does (0.3 in
    float32 is a hair above 0.3: step_size 0.1 gives 4 steps, not 3)."""
    field = odegrad.solvers.CountedFunc(Field())
    model = NeuralODE(field, t=(0.0, 0.3), method="rk4", options={"step_size": 0.1})
    x = torch.randn(4, 3)
    out = model(x)
    nfe = field.nfe
    expected = odegrad.odeint(field, x, torch.tensor([0.0, 0.3]), method="rk4", options={"step_size": 0.1})[-1]
    assert torch.equal(out, expected) and field.nfe == 2 * nfe
    with torch.no_grad():  # the export twin steps on the same grid
        assert torch.equal(UnrolledNeuralODE(model)(x), out) and field.nfe == 3 * nfe


def test_times_in_names_a_bad_dtype():
    model = NeuralODE(Field(), t=(0.0, 0.3))
    assert model.times_in(torch.float64) == [0.0, 0.3]
    assert model.times_in(torch.float32)[-1] == float(torch.tensor(0.3, dtype=torch.float32))
    with pytest.raises(odegrad.errors.InvalidInput, match="dtype"):
        model.times_in("float32")
