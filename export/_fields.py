"""A vector field that ``save_model`` can describe in JSON (the building block of CLI-exportable
models; any other field class can be made saveable with ``register_module``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from odegrad._checks import check_int
from odegrad.errors import UnknownName

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "silu": nn.SiLU,
               "sigmoid": nn.Sigmoid, "elu": nn.ELU}


class MLPField(nn.Module):
    """``f(t, y) = MLP(y)`` (or ``MLP([y, t])`` when ``time_dependent``) on the last dimension.

    Args:
        dim: state size (last dimension of y).
        hidden: width of the hidden layers.
        layers: number of hidden layers (>= 1).
        activation: one of ``tanh, relu, softplus, silu, sigmoid, elu``.
        time_dependent: append t as an extra input feature.

    Shapes: ``forward(t: Tensor[], y: Tensor[*batch, dim]) -> Tensor[*batch, dim]``.
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2, activation: str = "tanh",
                 time_dependent: bool = False):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("layers", layers)):
            check_int(f"MLPField {name}", value, low=1)
        if activation not in ACTIVATIONS:
            raise UnknownName("activation", activation, tuple(ACTIVATIONS))
        sizes = [dim + int(bool(time_dependent))] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            blocks += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], dim))
        self.dim, self.hidden, self.layers = dim, hidden, layers
        self.activation, self.time_dependent = activation, bool(time_dependent)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``dy/dt`` at ``(t, y)``: ``Tensor[*batch, dim]`` (t is used only when ``time_dependent``)."""
        if self.time_dependent:
            y = torch.cat([y, t.to(y.dtype).expand(*y.shape[:-1], 1)], dim=-1)
        return self.net(y)

    def export_config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-able (used by :func:`odegrad.export.save_model`)."""
        return {"dim": self.dim, "hidden": self.hidden, "layers": self.layers,
                "activation": self.activation, "time_dependent": self.time_dependent}
