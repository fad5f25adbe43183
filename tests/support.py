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
