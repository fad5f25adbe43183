"""Adapter making torchdiffeq's solvers usable as odegrad forward integrators
(``method="torchdiffeq:dopri5"``). Every gradient backend works with it, because backends only
use the :class:`Integrator` interface."""

from __future__ import annotations

import torch
from torch import Tensor

from .._counting import CountedFunc
from ..errors import UnknownName
from ._base import IntegrationConfig, Integrator, Solution, Stats

_FIXED = ("euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")
# Orders of accuracy of torchdiffeq's methods (its tableaux; the Adams methods at their default order).
_ORDERS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "bosh3": 3, "rk4": 4, "dopri5": 5,
           "dopri8": 8, "fehlberg2": 2, "adaptive_heun": 2, "explicit_adams": 4, "implicit_adams": 4}


def torchdiffeq_methods() -> tuple[str, ...]:
    from torchdiffeq._impl.odeint import SOLVERS

    return tuple(sorted(name for name in SOLVERS if name != "scipy_solver"))


class TorchdiffeqSolver(Integrator):
    """Forward integration by ``torchdiffeq.odeint(method=name)``.

    Per-step records and dense output are not available through torchdiffeq's public API
    (``has_dense_output`` is False; ``Solution.steps`` is None).
    """

    has_dense_output = False

    def __init__(self, name: str):
        valid = torchdiffeq_methods()
        if name not in valid:
            raise UnknownName("method", f"torchdiffeq:{name}", [f"torchdiffeq:{n}" for n in valid])
        self.name = f"torchdiffeq:{name}"
        self.method = name
        self.error_estimate = name not in _FIXED
        self.order = _ORDERS.get(name)

    def __repr__(self) -> str:
        return f"TorchdiffeqSolver({self.method!r})"

    def integrate(self, func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        import torchdiffeq

        counter = CountedFunc(func, t.dtype)
        options: dict = {}
        if self.error_estimate:
            options["max_num_steps"] = config.max_steps
            if config.first_step is not None:
                options["first_step"] = config.first_step
            if config.jumps:
                options["jump_t"] = torch.tensor(config.jumps, dtype=t.dtype, device=t.device)
            kwargs = dict(rtol=config.rtol, atol=config.atol, options=options)
        else:
            if config.step_size is not None:
                options["step_size"] = config.step_size
            elif config.grid is not None:
                options["grid_constructor"] = lambda *_: torch.as_tensor(config.grid, dtype=t.dtype)
            kwargs = dict(options=options)
        ys = torchdiffeq.odeint(counter, y0, t, method=self.method, **kwargs)
        return Solution(ys=ys, stats=Stats(nfe_forward=counter.nfe))
