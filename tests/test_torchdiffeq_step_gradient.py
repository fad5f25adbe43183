"""The torchdiffeq adapter's direct gradient is the derivative of the solution on its steps, not of
its step-size choice (issue 28, item 4; see odegrad/solvers/_torchdiffeq.py)."""

import torch
import torchdiffeq

from odegrad import odeint
from odegrad.testing import LinearField, RandomProjectionLoss, Settings, linear_gradients, reference_error, run_pair

D = torch.float64


def test_direct_gradient_through_torchdiffeq_does_not_differentiate_the_step_size():
    # y' = a·y with a tiny a: torchdiffeq's steps scale like 1/|f| ∝ 1/a, so differentiating them
    # added 1.1e-6 (relative) to dL/da at rtol 1e-9 before the adapter detached its norm.
    field = LinearField(torch.tensor([[1e-8]], dtype=D))
    y0, t, loss = torch.tensor([-2.0], dtype=D), torch.tensor([0.0, 0.2], dtype=D), RandomProjectionLoss(5)
    exact = linear_gradients(field.A, y0, t, loss)
    run = run_pair(field, y0, t, "torchdiffeq:dopri5", "direct", settings=Settings(rtol=1e-9, atol=1e-11), loss=loss)
    error, _ = reference_error(run.grads, exact)
    assert error < 1e-12


def test_the_adapters_solution_and_steps_are_torchdiffeqs_own():
    field = LinearField(torch.tensor([[-0.7, 1.2], [-0.9, -0.1]], dtype=D))
    y0, t = torch.tensor([0.3, -1.0], dtype=D), torch.tensor([0.0, 0.4, 1.5], dtype=D)
    with torch.no_grad():
        ours = odeint(field, y0, t, method="torchdiffeq:dopri5", rtol=1e-6, atol=1e-8)
        theirs = torchdiffeq.odeint(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8)
    assert torch.equal(ours, theirs)
