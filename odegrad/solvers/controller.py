"""Step-size control for adaptive methods: a PI controller and the Hairer–Wanner initial step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInput


@dataclass(frozen=True)
class PIController:
    """Proportional–integral step-size controller (Hairer, Nørsett & Wanner II, IV.2).

    New step ``h · clip(safety · ε_n^(−β1/q) · ε_{n−1}^(β2/q), dfactor, ifactor)`` with ε the
    scaled error norm and q the method order. After an accepted step the step never shrinks.

    The defaults (β1 = 1, β2 = 0: pure integral control, safety 0.9, factors 0.2–10) reproduce
    torchdiffeq's step sequence, so NFE comparisons against it are like for like. Hairer's PI
    gains ``PIController(beta1=0.7, beta2=0.4)`` give smoother step sequences.
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta1: float = 1.0
    beta2: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "safety": (0 < self.safety <= 1, "a number in (0, 1]"),
            "ifactor": (self.ifactor >= 1, "a number >= 1"),
            "dfactor": (0 < self.dfactor <= 1, "a number in (0, 1]"),
            "beta1": (self.beta1 > 0, "a positive number"),
            "beta2": (self.beta2 >= 0, "a non-negative number"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise InvalidInput(f"PIController {name}", getattr(self, name), expected)

    def next_step(self, h: float, ratio: float, previous_ratio: float | None, order: int,
                  accepted: bool) -> float:
        """Signed size of the next step after a step of size ``h`` with error ratio ``ratio``."""
        if ratio == 0.0:
            return h * self.ifactor
        factor = self.safety * ratio ** (-self.beta1 / order)
        if self.beta2 and previous_ratio:
            factor *= previous_ratio ** (self.beta2 / order)
        lower = 1.0 if accepted else self.dfactor
        return h * min(self.ifactor, max(factor, lower))


def initial_step(func, t0: float, y0: Tensor, f0: Tensor, order: int, rtol: float, atol: float,
                 norm) -> float:
    """Hairer–Wanner starting step size (Solving ODEs I, II.4); costs one evaluation of func."""
    with torch.no_grad():
        scale = atol + y0.abs() * rtol
        d0 = float(norm(y0 / scale))
        d1 = float(norm(f0 / scale))
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        f1 = func(t0 + h0, y0 + h0 * f0)
        d2 = float(norm((f1 - f0) / scale)) / h0
        if max(d1, d2) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
        h = min(100 * h0, h1)
    return h if math.isfinite(h) and h > 0 else 1e-6
