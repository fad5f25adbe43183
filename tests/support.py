"""Vector fields and comparisons shared by the backend test modules."""

import torch
from torch import nn

D = torch.float64


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (b = the reference)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


class MLP(nn.Module):
    """float64 tanh MLP field ``[..., dim] -> [..., dim]``, optionally fed the time as an input."""

    def __init__(self, dim: int = 3, width: int = 16, time: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.time = time
        self.net = nn.Sequential(nn.Linear(dim + int(time), width), nn.Tanh(), nn.Linear(width, dim)).to(D)

    def forward(self, t, y):
        if self.time:
            y = torch.cat([y, t.expand(*y.shape[:-1], 1).to(y.dtype)], dim=-1)
        return self.net(y)
