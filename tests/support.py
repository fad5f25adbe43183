"""Vector fields and comparisons shared by the backend test modules."""

import torch

from odegrad.testing import RandomMLPField

D = torch.float64


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (b = the reference)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def tanh_mlp(dim: int = 3, width: int = 16, time: bool = False, seed: int = 0) -> RandomMLPField:
    """float64 tanh MLP field ``[..., dim] -> [..., dim]`` (one hidden layer), optionally fed the
    time as an input; gain 0.6 gives the weight scale of torch's default initialisation."""
    return RandomMLPField(dim, width, 1, time_dependent=time, seed=seed, gain=0.6)


def assert_trains_like(compiled: torch.nn.Module, reference: torch.nn.Module, modules: tuple[torch.nn.Module, ...],
                       shape: tuple[int, ...], iterations: int) -> None:
    """``iterations`` SGD steps on random float64 inputs of ``shape``: the compiled model's outputs
    (1e-12) and gradients (1e-10) are the reference's; each of ``modules`` (those whose parameters
    the two models use) then steps with the compiled gradients, so the next step sees new values
    of the same shapes (a recompilation there fails an ``error_on_recompile`` test)."""
    for _ in range(iterations):
        x = torch.randn(*shape, dtype=torch.float64)
        out, grads = train_step(compiled, x)
        expected, expected_grads = train_step(reference, x)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        for grad, want in zip(grads, expected_grads):
            torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            for module in modules:
                for parameter, grad in zip(module.parameters(), grads):
                    parameter -= 0.05 * grad


def train_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward and backward pass of ``model`` on ``x`` (loss: the sum of squares): the output
    and the parameters' gradients."""
    model.zero_grad()
    out = model(x)
    out.pow(2).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]
