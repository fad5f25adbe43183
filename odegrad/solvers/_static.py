"""Output times read once, so that a traced fixed-step solve unrolls into one static graph.

A model written the torchdiffeq way keeps its output times in a tensor (a buffer, a constant)
and calls ``odeint`` in ``forward``; a tracer (``torch.export``, ``torch.jit.trace``) cannot read
that tensor's values, so the solve cannot know its step grid. :class:`StaticTimes` is the hook
that ``odegrad.export`` enables around such a model: an eager *recording* pass reads every
solve's times (and its options) once, refusing what has no static graph, and the traced *replay*
pass gives the k-th solve the k-th recorded times, so its steps unroll with Python-float times.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ExportError
from ._base import IntegrationConfig, Integrator
from ._controller import fixed_grid
from ._loop import unroll
from ._step_solver import StepSolver

_ACTIVE: contextvars.ContextVar[StaticTimes | None] = contextvars.ContextVar("odegrad_static_times", default=None)
_FIXED_HINT = ("call odeint with a fixed-step method (euler, midpoint, heun, rk4) and "
               "options={'step_size': h} or {'grid': [...]}")


def require_unrollable(solver: Integrator, what: str, hint: str, adaptive_note: str = "") -> StepSolver:
    """``solver`` if a solve with it unrolls into a static graph (an odegrad fixed-step solver);
    else an ExportError saying why ``what`` cannot be exported, ``adaptive_note`` added for an
    adaptive method, and ``hint``."""
    if not isinstance(solver, StepSolver):
        raise ExportError(f"cannot export {what}: only odegrad's own step solvers unroll into a static "
                          f"graph; {hint}")
    if solver.error_estimate:
        raise ExportError(f"cannot export {what}: an adaptive step-size method chooses how many steps to "
                          f"take from the data (data-dependent control flow), so it has no fixed graph"
                          f"{adaptive_note}; {hint}")
    return solver


@dataclass
class StaticSolve:
    """One solve seen by the recording pass.

    Attributes:
        method: the solver's name.
        order: the solver's order.
        times: the output times, read once as Python floats.
        config: the solve's options, built once from the eager call.
    """

    method: str
    order: int
    times: list[float]
    config: IntegrationConfig

    @property
    def steps(self) -> int:
        """Number of fixed steps the solve unrolls into."""
        return len(fixed_grid(self.times, self.config)) - 1


class StaticTimes:
    """The solves of one model, recorded eagerly and replayed while the model is traced.

    Usage (what ``odegrad.export`` does)::

        static = StaticTimes()
        with static.record(x):          # x: the example input, requiring grad
            model(x)                     # every odeint/solve call records its times
        with static.replay():
            torch.export.export(model, (x,))   # the k-th call unrolls the k-th recorded times

    Recording refuses (with :class:`~odegrad.errors.ExportError`) adaptive methods and integrators
    that are not odegrad step solvers, events, dense output and regularization, and output times
    computed from the recorded input. Recording again (another example input) checks that every
    solve gets the same times. Inside either context :func:`odegrad.solve` takes the static path
    (no gradient backend: the result is for inference).
    """

    def __init__(self):
        self.solves: list[StaticSolve] = []
        self._inputs: tuple[Tensor, ...] = ()
        self._replaying = False
        self._index = 0
        self._passes = 0

    @staticmethod
    def active() -> StaticTimes | None:
        """The hook enabled in this context, or None (the usual case; always under
        ``torch.compile``, whose tracer cannot read a context variable and which export never uses)."""
        if torch.compiler.is_dynamo_compiling():
            return None
        return _ACTIVE.get()

    @contextlib.contextmanager
    def record(self, *inputs: Tensor) -> Iterator[StaticTimes]:
        """Record the solves of an eager pass; ``inputs`` (the model's inputs, requiring grad) are
        what output times must not depend on. A second pass must make the same solves."""
        self._inputs, self._replaying, self._index = inputs, False, 0
        with self._enabled():
            yield self
        if self._passes and self._index != len(self.solves):
            raise ExportError(f"the model solved {self._index} ODEs for one example input and "
                              f"{len(self.solves)} for another: how many solves it makes depends on the input")
        self._passes += 1

    @contextlib.contextmanager
    def replay(self) -> Iterator[StaticTimes]:
        """Replay the recorded solves while the model is traced."""
        self._inputs, self._replaying, self._index = (), True, 0
        with self._enabled():
            yield self
        if self._index != len(self.solves):
            raise ExportError(f"the traced model solved {self._index} ODEs where the eager model solved "
                              f"{len(self.solves)}: its solves must not depend on the input")

    @contextlib.contextmanager
    def _enabled(self) -> Iterator[None]:
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def solve(self, solver: Integrator, func: Callable, y0: Tensor, t: Tensor,
              config: Callable[[], IntegrationConfig]) -> Tensor:
        """The states at the output times, ``Tensor[len(t), *y0.shape]``, by unrolled fixed steps.

        Args:
            solver: the solve's integrator.
            func: the solve's (flat) func.
            y0: the (flat) initial state.
            t: the output times as the caller passed them (a tensor).
            config: builds the solve's configuration (called only while recording).

        Raises:
            ExportError: see the class docstring; while replaying, a solve that does not match the
                recorded one (another method or number of times).
        """
        name = getattr(solver, "name", repr(solver))
        if not (self._replaying or self._passes):
            recorded = self._record(solver, name, t, config())
        else:
            recorded = self._next(name, t)
            if not self._replaying:
                self._check_same_times(recorded, t)
        return unroll(solver, func, y0, recorded.times, recorded.config, time_dtype=t.dtype)

    def _record(self, solver: Integrator, name: str, t: Tensor, config: IntegrationConfig) -> StaticSolve:
        require_unrollable(solver, f"odeint(method={name!r}) inside the model", _FIXED_HINT)
        self._check_constant(t)
        recorded = StaticSolve(name, solver.order, [float(v) for v in t.detach().tolist()], config)
        self.solves.append(recorded)
        self._index += 1
        return recorded

    def _next(self, name: str, t: Tensor) -> StaticSolve:
        if self._index >= len(self.solves):
            raise ExportError(f"the model makes more ODE solves for this input than the {len(self.solves)} "
                              "recorded: how many solves it makes depends on the input")
        recorded = self.solves[self._index]
        if recorded.method != name or t.shape[0] != len(recorded.times):
            raise ExportError(f"ODE solve {self._index} of the model used method {recorded.method!r} with "
                              f"{len(recorded.times)} output times when recorded and {name!r} with "
                              f"{t.shape[0]} now: the model's solves depend on the input")
        self._index += 1
        return recorded

    def _check_same_times(self, recorded: StaticSolve, t: Tensor) -> None:
        """A recording pass after the first: the solve's times must be the recorded ones."""
        self._check_constant(t)
        times = [float(v) for v in t.detach().tolist()]
        if times != recorded.times:
            raise ExportError(f"the output times of ODE solve {self._index - 1} are {recorded.times} for one "
                              f"example input and {times} for another: times computed from the model's "
                              "input cannot be read once at export; keep them in a buffer, a constant "
                              "tensor or Python floats")

    def _check_constant(self, t: Tensor) -> None:
        """Refuse output times computed (differentiably) from the recorded inputs."""
        if not (self._inputs and t.requires_grad and t.grad_fn is not None):
            return
        grads = torch.autograd.grad(t, self._inputs, grad_outputs=torch.ones_like(t), allow_unused=True,
                                    retain_graph=True)
        if any(g is not None for g in grads):
            raise ExportError(f"the output times t of ODE solve {self._index} are computed from the model's "
                              "input, so the step grid is not known when the graph is built: a static "
                              "graph needs times that are constants of the model (a buffer, a constant "
                              "tensor or Python floats), read once at export")
