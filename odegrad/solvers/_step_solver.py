"""One-step methods driven by the shared loop (:mod:`odegrad.solvers._loop`)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from ..errors import UnsupportedCombination
from ._base import Func, IntegrationConfig, Integrator, Solution, StepResult
from ._loop import integrate_steps
from ._per_sample import integrate_per_sample
from ._traced import integrate_traced, traced_unsupported


class StepSolver(Integrator):
    """A one-step method driven by the shared loop and a stepping controller.

    Subclasses implement ``init`` (state carried between steps, e.g. the FSAL derivative),
    ``step`` and ``interpolate`` and declare ``order`` (drives step-size control) and
    ``error_estimate``. Dense output comes from ``interpolate``, so every step solver has it.
    """

    order: int = 1
    has_dense_output = True
    traceable: bool = True
    """The step reads no tensor value (no ``float()``, no Python branch on a tensor), so the traced
    driver can run it inside ``torch.while_loop``."""
    evaluations_per_step: int | None = None
    """Evaluations of func in one ``step`` when that number is fixed (the traced driver counts
    NFE from its step counts with it; None: not fixed)."""

    @abstractmethod
    def init(self, func: Func, t0: float, y0: Tensor) -> Any:
        """State before the first step (e.g. ``func(t0, y0)``)."""

    @abstractmethod
    def step(self, func: Func, t0: float, h: float, y0: Tensor, state: Any) -> StepResult:
        """Advance from ``(t0, y0)`` by the signed step ``h``; ``func`` is a
        :class:`~odegrad.solvers.CountedFunc` (it takes float or tensor times)."""

    @abstractmethod
    def interpolate(self, dense_info: Any, t0: float, h: float, t: float) -> Tensor:
        """Continuous extension of the step ``[t0, t0 + h]`` evaluated at ``t``."""

    def constants(self) -> tuple[float, ...]:
        """The float constants of ``step`` and ``interpolate`` that an exact ONNX export must carry
        as float64 tensors (see :func:`~odegrad.solvers._scalars.exact_constants`); none by default."""
        return ()

    def interpolate_derivative(self, dense_info: Any, t0: float, h: float, t: float) -> Tensor:
        """d/dt of :meth:`interpolate` at ``t`` (``Solution.derivative``); solvers that do not
        override it refuse.

        Raises:
            UnsupportedCombination: this solver does not provide the derivative of its dense output.
        """
        raise UnsupportedCombination(f"the step solver {self!r} does not provide the derivative of "
                                     "its dense output (interpolate_derivative)")

    def integrate(self, func: Func, y0: Tensor, t: Tensor, config: IntegrationConfig,
                  *, keep_dense: bool = False) -> Solution:
        """Solve through the times ``t`` with the shared loop; ``ys: Tensor[len(t), *y0.shape]``,
        with per-step records and, if ``keep_dense``, the dense output. A 2-D ``t: Tensor[B, n]``
        asks for a per-sample solve (:func:`~._per_sample.integrate_per_sample`; ``ys: Tensor[B,
        n, *y0.shape[1:]]``)."""
        if t.dim() == 2:
            return integrate_per_sample(self, func, y0, t, config)
        if self.error_estimate and uses_traced_driver(self, config, keep_dense):
            return integrate_traced(self, func, y0, t, config, keep_dense=keep_dense)
        return integrate_steps(self, func, y0, t, config, keep_dense=keep_dense)



def uses_traced_driver(solver: StepSolver, config: IntegrationConfig, keep_dense: bool) -> bool:
    """Whether an adaptive solve runs on the traced driver: ``driver="traced"``, or ``"auto"`` while
    ``torch.compile`` traces it and it needs nothing only the eager driver does."""
    if config.driver == "traced":
        return True
    return (config.driver == "auto" and torch.compiler.is_compiling()
            and not traced_unsupported(solver, config, keep_dense))
