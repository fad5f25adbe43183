"""Adapter making torchdiffeq's solvers usable as odegrad forward integrators
(``method="torchdiffeq:dopri5"``). Every gradient backend works with it, because backends only
use the :class:`Integrator` interface.

Every setting of :class:`IntegrationConfig` is either passed on to torchdiffeq or refused with
:class:`~odegrad.errors.UnsupportedCombination` naming the option, and torchdiffeq's failures
(its ``AssertionError``s) arrive as the odegrad errors the native loop raises, with the time
reached, the end time and the NFE:

========================  ===========================================================
odegrad                   torchdiffeq
========================  ===========================================================
rtol, atol                rtol, atol
first_step, norm          first_step, norm (the default RMS norm is torchdiffeq's own),
                          evaluated on detached tensors (see below)
controller / safety,      safety, ifactor, dfactor — torchdiffeq's controller is
ifactor, dfactor          integral-only: other PI gains are refused
stops, jumps              step_t, jump_t (stops that are also jumps go to jump_t only)
step_size, grid           grid_constructor returning odegrad's own grid (checked and
                          counted against max_steps before any step; it must end on t[-1])
perturb                   perturb
max_steps                 counted here over the whole solve (torchdiffeq's max_num_steps
                          counts per output interval)
========================  ===========================================================

**Step sizes are not differentiated.** torchdiffeq computes its first step and every next step
from norms of y, f and the error estimate, so autograd through it (``gradient="direct"``)
differentiates the step-size choice too: h ∝ 1/‖f‖ adds a term that does not vanish as rtol
→ 0 (measured on y' = a·y, a = 1e-8, y0 = −2, t ∈ [0, 0.2], rtol 1e-9: dL/da 1.04153 against the
exact 1.0415286, a relative error of 1.1e-6, ≈ 1000·rtol; the issue-28 case, a = 1e-12 on [0, 1], was
off by 3e-4). The adapter hands torchdiffeq the norm evaluated on detached tensors, so its steps
are constants to autograd, as odegrad's own loop treats them: ``torchdiffeq:*`` + direct is the
derivative of the solution on those steps (1.0415286 above, like backsolve and odegrad's dopri5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import bad_batch_entries
from .._counting import CountedFunc
from ..errors import (
    MaxStepsExceeded,
    NonFiniteValue,
    StepSizeUnderflow,
    UnknownName,
    UnsupportedCombination,
)
from ._base import IntegrationConfig, Integrator, Solution, Stats
from ._controller import fixed_grid

# Messages of torchdiffeq 0.2.5's own assertions (rk_common.py), and what each one means here.
_UNDERFLOW = "underflow in dt"
_NON_FINITE_STATE = "non-finite values in state"


def _solver_classes() -> dict[str, type]:
    from torchdiffeq._impl.odeint import SOLVERS

    return {name: cls for name, cls in SOLVERS.items() if name != "scipy_solver"}


def torchdiffeq_methods() -> tuple[str, ...]:
    """Names accepted after ``"torchdiffeq:"``: torchdiffeq's solvers except its scipy wrapper."""
    return tuple(sorted(_solver_classes()))


class _Progress(CountedFunc):
    """The counted func that also follows the solve through torchdiffeq's ``callback_step``
    hook (called before every step attempt, with the time in the user's frame): where the
    current step starts, how many steps were tried (checked against ``max_steps``, raising
    :class:`MaxStepsExceeded`), and the last output of func (a reference only; read on failure)."""

    def __init__(self, func, time_dtype: torch.dtype, t0: float, t_end: float, max_steps: int):
        super().__init__(func, time_dtype)
        self.reached: float | Tensor = t0
        self.t_end = t_end
        self.max_steps = max_steps
        self.steps = 0
        self.accepted = 0
        self.last: Any = None

    def forward(self, t: float | Tensor, y: Any) -> Any:
        """``func(t, y)``, counted and checked, with the output remembered."""
        self.last = super().forward(t, y)
        return self.last

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq's hook before each step attempt."""
        self.reached = t0
        if self.steps >= self.max_steps:
            raise MaxStepsExceeded(f"max_steps={self.max_steps} steps were not enough",
                                   t=float(t0), t_end=self.t_end, nfe=self.nfe)
        self.steps += 1

    def failure(self, error: AssertionError) -> Exception:
        """The odegrad error for one of torchdiffeq's assertions (the assertion itself when it
        is not one of torchdiffeq's, e.g. raised by func)."""
        message, t = str(error), float(self.reached)
        last = self.last.detach() if isinstance(self.last, Tensor) else None
        func_failed = last is not None and not bool(torch.isfinite(last).all())
        if message.startswith(_NON_FINITE_STATE) or (message.startswith(_UNDERFLOW) and func_failed):
            return NonFiniteValue("a value produced by func", t=t, nfe=self.nfe,
                                  bad_indices=None if last is None else bad_batch_entries(last))
        if message.startswith(_UNDERFLOW):
            return StepSizeUnderflow(f"step size underflow in torchdiffeq ({message})", t=t,
                                     t_end=self.t_end, nfe=self.nfe)
        return error


class _AdaptiveProgress(_Progress):
    """:class:`_Progress` that also counts accepted steps (a hook of torchdiffeq's adaptive
    solvers only: its fixed-grid solvers warn about it)."""

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq's hook after each accepted step."""
        self.accepted += 1


class TorchdiffeqSolver(Integrator):
    """Forward integration by ``torchdiffeq.odeint(method=name)``.

    Per-step records and dense output are not available through torchdiffeq's public API
    (``has_dense_output`` is False; ``Solution.steps`` is None). Fixed-grid methods (torchdiffeq's
    ``FixedGridODESolver`` subclasses: euler, midpoint, heun2, heun3, rk4, the Adams methods) take
    ``step_size``/``grid``; the others are adaptive. See the module docstring for the options.
    """

    has_dense_output = False

    def __init__(self, name: str):
        from torchdiffeq._impl.solvers import FixedGridODESolver

        classes = _solver_classes()
        if name not in classes:
            raise UnknownName("method", f"torchdiffeq:{name}", [f"torchdiffeq:{n}" for n in sorted(classes)])
        self.name = f"torchdiffeq:{name}"
        self.method = name
        self.error_estimate = not issubclass(classes[name], FixedGridODESolver)
        self.order = classes[name].order

    def __repr__(self) -> str:
        return f"TorchdiffeqSolver({self.method!r})"

    def integrate(self, func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        """Solve with torchdiffeq; its failures are raised as odegrad errors (module docstring)."""
        import torchdiffeq

        times = t.tolist()
        progress = (_AdaptiveProgress if self.error_estimate else _Progress)(
            func, t.dtype, times[0], times[-1], config.max_steps)
        options = self._adaptive_options(config, t) if self.error_estimate else self._grid_options(config, times, t)
        try:
            ys = torchdiffeq.odeint(progress, y0, t, rtol=config.controller.rtol, atol=config.controller.atol,
                                    method=self.method, options=options)
        except AssertionError as error:
            failure = progress.failure(error)
            if failure is error:
                raise
            raise failure from error
        rejected = progress.steps - progress.accepted if self.error_estimate else 0
        return Solution(ys=ys, stats=Stats(nfe_forward=progress.nfe, steps_accepted=progress.steps - rejected,
                                           steps_rejected=rejected))

    def _adaptive_options(self, config: IntegrationConfig, t: Tensor) -> dict[str, Any]:
        controller = config.controller
        norm = controller.norm
        options: dict[str, Any] = {"norm": lambda x: norm(x.detach())}  # steps not differentiated
        if controller.first_step is not None:
            options["first_step"] = controller.first_step
        if (controller.beta1, controller.beta2) != (1.0, 0.0):
            raise UnsupportedCombination(
                f"options['controller'] with beta1={controller.beta1}, beta2={controller.beta2} cannot be "
                f"passed on to {self.name}: "
                f"torchdiffeq's step-size controller is integral-only (PIController with "
                f"beta1=1, beta2=0); set safety/ifactor/dfactor only, or use an odegrad method")
        options.update(safety=controller.safety, ifactor=controller.ifactor, dfactor=controller.dfactor)
        jumps = sorted(set(controller.jumps))
        stops = sorted(set(controller.stops) - set(jumps))
        for key, values in (("step_t", stops), ("jump_t", jumps)):
            if values:
                options[key] = torch.tensor(values, dtype=t.dtype, device=t.device)
        return options

    def _grid_options(self, config: IntegrationConfig, times: list[float], t: Tensor) -> dict[str, Any]:
        grid = fixed_grid(times, config)  # refuses bad grids and too many steps before any step
        if grid[-1] != times[-1]:
            raise UnsupportedCombination(
                f"options['grid'] ends at {grid[-1]}, beyond t[-1]={times[-1]}: {self.name} "
                f"requires a grid that ends exactly on t[-1] (odegrad's own methods step past it)")
        steps = torch.tensor(grid, dtype=t.dtype, device=t.device)
        return {"grid_constructor": lambda *_: steps, "perturb": config.perturb}
