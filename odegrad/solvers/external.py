"""Adapter making torchdiffeq's solvers usable as odegrad forward integrators
(``method="torchdiffeq:dopri5"``). Every gradient backend works with it, because backends only
use the :class:`Integrator` interface."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UnknownName
from .base import IntegrationConfig, Integrator, Solution, Stats
from .loop import TimedFunc

_FIXED = ("euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")


def torchdiffeq_methods() -> tuple[str, ...]:
    from torchdiffeq._impl.odeint import SOLVERS

    return tuple(sorted(name for name in SOLVERS if name != "scipy_solver"))


class TorchdiffeqSolver(Integrator):
    """Forward integration by ``torchdiffeq.odeint(method=name)``.

    Per-step records and dense output are not available through torchdiffeq's public API;
    ``Solution.steps`` and ``Solution.dense`` are None.
    """

    def __init__(self, name: str):
        valid = torchdiffeq_methods()
        if name not in valid:
            raise UnknownName("method", f"torchdiffeq:{name}", [f"torchdiffeq:{n}" for n in valid])
        self.name = f"torchdiffeq:{name}"
        self.method = name
        self.adaptive = name not in _FIXED

    def __repr__(self) -> str:
        return f"TorchdiffeqSolver({self.method!r})"

    def integrate(self, func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        import torchdiffeq

        if keep_dense:
            raise NotImplementedError("dense output is not available from torchdiffeq")
        timed = TimedFunc(func, t)
        timed(float(t[0]), y0)  # checks func's output before torchdiffeq sees it

        def rhs(tt, y):
            timed.nfe += 1
            return timed.raw(tt, y)

        options: dict = {}
        if self.adaptive:
            options["max_num_steps"] = config.max_steps
            if config.first_step is not None:
                options["first_step"] = config.first_step
            kwargs = dict(rtol=config.rtol, atol=config.atol, options=options)
        else:
            if config.step_size is not None:
                options["step_size"] = config.step_size
            elif config.grid is not None:
                options["grid_constructor"] = lambda *_: torch.as_tensor(config.grid, dtype=t.dtype)
            kwargs = dict(options=options)
        ys = torchdiffeq.odeint(rhs, y0, t, method=self.method, **kwargs)
        return Solution(ys=ys, stats=Stats(nfe_forward=timed.nfe))
