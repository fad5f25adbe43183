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


def train_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward and backward pass of ``model`` on ``x`` (loss: the sum of squares): the output
    and the parameters' gradients."""
    model.zero_grad()
    out = model(x)
    out.pow(2).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]
