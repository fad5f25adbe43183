"""Public entry points ``odeint`` and ``solve``: argument checking, defaults and dispatch to a
forward integrator and a gradient backend (two independent choices)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_state
from ._params import resolve_params
from .errors import InvalidInput
from .gradients import AdjointBackend, Backend, Problem, get_backend
from .regularization import Regularizer, check_regularizer
from .solvers import Integrator, Solution, get_solver, is_tracing, make_config

State = Tensor | tuple[Tensor, ...]
"""An ODE state: one tensor, or a tuple of tensors integrated together (``y0`` and ``ys``)."""

class _FlatTupleFunc:
    """Presents a func over a tuple of tensors as a func over one flat tensor (as torchdiffeq does)."""

    def __init__(self, func: Callable, shapes: list[torch.Size]):
        self.func = func
        self.shapes = shapes
        self.sizes = [math.prod(s) for s in shapes]

    def unflatten(self, y: Tensor) -> tuple[Tensor, ...]:
        lead = y.shape[:-1]
        return tuple(part.reshape((*lead, *shape))
                     for part, shape in zip(torch.split(y, self.sizes, dim=-1), self.shapes))

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.func(t, self.unflatten(y))
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
            raise InvalidInput("func output", type(out).__name__,
                               f"a tuple of {len(self.shapes)} tensors (one per state in y0)")
        for i, (o, shape) in enumerate(zip(out, self.shapes)):
            if tuple(o.shape) != tuple(shape):
                raise InvalidInput(f"func output[{i}] shape", str(tuple(o.shape)),
                                   f"{tuple(shape)} (the shape of y0[{i}])")
        return torch.cat([o.reshape(-1) for o in out])


def _check_state(y0: Any) -> tuple[Tensor, _FlatTupleFunc | None, list[torch.Size] | None]:
    if isinstance(y0, Tensor):
        tensors = [y0]
    elif isinstance(y0, (tuple, list)) and y0 and all(isinstance(y, Tensor) for y in y0):
        tensors = list(y0)
    else:
        raise InvalidInput("y0", type(y0).__name__, "a Tensor or a non-empty tuple of Tensors")
    for i, y in enumerate(tensors):
        name = "y0" if isinstance(y0, Tensor) else f"y0[{i}]"
        if y.is_floating_point() and (y.dtype, y.device) != (tensors[0].dtype, tensors[0].device):
            raise InvalidInput(f"{name} dtype/device", f"{y.dtype} on {y.device}",
                               f"{tensors[0].dtype} on {tensors[0].device} like y0[0]")
        check_state(name, y)
    if isinstance(y0, Tensor):
        return y0, None, None
    shapes = [y.shape for y in tensors]
    return torch.cat([y.reshape(-1) for y in tensors]), None, shapes


def _check_t(t: Any, y0: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidInput("t", type(t).__name__, "a 1-D tensor of times") from None
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidInput("t shape", str(tuple(t.shape)), "a non-empty 1-D tensor of times")
    if not t.is_floating_point():
        raise InvalidInput("t dtype", str(t.dtype), "a floating-point dtype (e.g. torch.linspace)")
    if t.device != y0.device:
        raise InvalidInput("t device", str(t.device), f"{y0.device} (the device of y0)")
    if is_tracing() or t.numel() == 1:
        return t
    values = t.detach()
    if not bool(torch.isfinite(values).all()):
        raise InvalidInput("t", values.tolist(), "finite times")
    diffs = values[1:] - values[:-1]
    direction = 1.0 if float(diffs[0]) > 0 else -1.0
    bad = (diffs * direction <= 0).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        what = "repeats a value" if float(diffs[i]) == 0 else "changes direction"
        raise InvalidInput("t", f"t[{i}]={float(values[i]):.10g}, t[{i + 1}]={float(values[i + 1]):.10g} ({what})",
                           "strictly increasing or strictly decreasing times")
    return t


def _with_time_gradient(backend: Backend, problem: Problem, t: Tensor) -> Solution:
    """Solve, and make ys differentiable in t: dL/dt_i = f(t_i, y_i)·dL/dy_i for i ≥ 1 and
    dL/dt_0 = −f(t_0, y_0)·dL/dy_0 (through the solve). Exact for the continuous flow, the same
    rule torchdiffeq's adjoint uses; costs len(t) extra evaluations of func."""
    t_fixed = problem.t
    with torch.no_grad():
        f0 = problem.func(t_fixed[0], problem.y0)
    shift0 = (t[0] - t_fixed[0]).to(problem.y0.dtype)
    solution = backend.solve(problem.with_y0(problem.y0 - shift0 * f0))
    ys = solution.ys
    with torch.no_grad():
        slopes = torch.stack([problem.func(t_fixed[i], ys[i]) for i in range(1, len(t_fixed))])
    solution.stats.nfe_forward += len(t_fixed)
    shifts = (t[1:] - t_fixed[1:]).to(ys.dtype).reshape(-1, *([1] * problem.y0.dim()))
    solution.ys = torch.cat([problem.y0.unsqueeze(0), ys[1:] + shifts * slopes])
    return solution


def solve(func: Callable, y0: State, t: Tensor, *, method: str | Integrator = "dopri5",
          gradient: str | Backend = "direct", rtol: float = 1e-7, atol: float = 1e-9,
          options: Mapping[str, Any] | None = None, params: Iterable[Tensor] | None = None,
          regularization: Regularizer | None = None) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` and report outputs, cost and per-step data.

    Args:
        func: ``func(t, y) -> dy/dt`` with ``t`` a 0-dim tensor and the output shaped like ``y``
            (a tuple of tensors when ``y0`` is a tuple).
        y0: initial state, ``Tensor[*shape]`` of any shape (batch dimensions included) or a tuple.
        t: ``Tensor[T]`` strictly increasing or strictly decreasing output times; ``t[0]`` is the
            initial time.
        method: integrator name (``solver_names()``, ``"torchdiffeq:<name>"``) or an Integrator.
        gradient: backend name (``backend_names()``) or a configured Backend.
        rtol, atol: tolerances of adaptive methods.
        options: ``max_steps``; fixed-step: ``step_size`` or ``grid``; adaptive: ``first_step``,
            ``norm``, ``controller`` or ``safety``/``ifactor``/``dfactor``.
        params: tensors to differentiate by adjoint-type backends (default: ``func.parameters()``
            when func is an ``nn.Module``).
        regularization: None or a :mod:`odegrad.regularization` term (``LocalRegularization``,
            ``Kinetic``, ``TaylorOrder``), returned as ``Solution.regularization``.

    Returns:
        Solution with ``ys: Tensor[T, *shape]`` (tuple for tuple states), ``stats``, ``steps``
        and, with ``regularization``, the scalar term ``regularization`` (differentiable in
        func's parameters; add it to the loss).
    """
    if not callable(func):
        raise InvalidInput("func", type(func).__name__, "a callable func(t, y)")
    solver = get_solver(method)
    backend = get_backend(gradient)
    params = resolve_params(func, params, adjoint=isinstance(backend, AdjointBackend))
    flat_y0, _, shapes = _check_state(y0)
    t = _check_t(t, flat_y0)
    config = make_config(solver, rtol, atol, options, dtype=flat_y0.dtype)
    regularization = check_regularizer(regularization)
    flat_func = _FlatTupleFunc(func, shapes) if shapes is not None else func
    if t.numel() == 1 or flat_y0.numel() == 0:  # nothing to integrate: y0 at every time
        solution = Solution(ys=flat_y0.unsqueeze(0).expand(t.numel(), *flat_y0.shape).clone())
        if regularization is not None:
            solution.regularization = flat_y0.new_zeros(())
    else:
        problem = Problem(func=flat_func, y0=flat_y0, t=t.detach(), solver=solver, config=config,
                          params=params)
        if regularization is not None:
            problem, finish = regularization.attach(problem)
        solution = (_with_time_gradient(backend, problem, t) if t.requires_grad
                    else backend.solve(problem))
        if regularization is not None:
            solution, solution.regularization = finish(solution)
    if shapes is not None:
        solution.ys = flat_func.unflatten(solution.ys)
    return solution


def odeint(func: Callable, y0: State, t: Tensor, *, method: str | Integrator = "dopri5",
           gradient: str | Backend = "direct", rtol: float = 1e-7, atol: float = 1e-9,
           options: Mapping[str, Any] | None = None,
           params: Sequence[Tensor] | None = None) -> State:
    """Drop-in for ``torchdiffeq.odeint``: returns ``Tensor[len(t), *y0.shape]`` (a tuple of such
    for tuple states). See :func:`solve` for the arguments."""
    return solve(func, y0, t, method=method, gradient=gradient, rtol=rtol, atol=atol,
                 options=options, params=params).ys
