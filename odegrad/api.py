"""Public entry points ``odeint`` and ``solve``: argument checking, defaults and dispatch to a
forward integrator and a gradient backend (two independent choices)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ._checks import check_sample_times, check_signature, check_state, check_times
from ._counting import active_transforms, check_func_output
from ._params import resolve_params
from .errors import ExportError, InvalidInput, UnsupportedCombination
from .events import Event, check_events, solve_events
from .gradients import BACKEND_ALIASES, AdjointBackend, Backend, Problem, backend_names, get_backend
from .regularization import Regularizer, check_regularizer
from .solvers import IntegrationConfig, Integrator, Solution, StaticTimes, get_solver, make_config, solves_per_sample

State = Tensor | tuple[Tensor, ...]
"""An ODE state: one tensor, or a tuple of tensors integrated together (``y0`` and ``ys``)."""
Tolerance = float | Tensor | tuple[float | Tensor, ...]
"""``rtol``/``atol``: a number, a tensor of per-element tolerances broadcast against ``y0``, or for
tuple states a tuple with one (number or tensor) per part, as torchdiffeq accepts."""

class _FlatTupleFunc:
    """Presents a func over a tuple of tensors (as torchdiffeq does), or over a complex tensor
    (torchdiffeq integrates complex states; here they travel as their real views), as a func over
    one flat real tensor: ``Tensor[n]``, or per-sample ``Tensor[B, n]`` (each entry flattened on
    its own, so the batch dimension stays first).

    Args:
        func: the user's ``func(t, y)``.
        templates: the parts of ``y0`` (shapes and dtypes; per-sample: the parts of one entry).
        is_tuple: whether ``y0`` is a tuple (else one complex tensor).
    """

    def __init__(self, func: Callable, templates: list[Tensor], is_tuple: bool):
        self.func = func
        self.is_tuple = is_tuple
        self.shapes = [y.shape for y in templates]
        self.dtypes = [y.dtype for y in templates]
        self.real_shapes = [_real_view(y).shape for y in templates]
        self.sizes = [math.prod(s) for s in self.real_shapes]

    def unflatten(self, y: Tensor) -> State:
        """The state (tuple, or complex tensor) that the flat real ``y: Tensor[*lead, n]`` holds."""
        lead = y.shape[:-1]
        parts = []
        for part, shape, dtype in zip(torch.split(y, self.sizes, dim=-1), self.real_shapes, self.dtypes):
            part = part.reshape((*lead, *shape))
            parts.append(torch.complex(part[..., 0], part[..., 1]) if dtype.is_complex else part)
        return tuple(parts) if self.is_tuple else parts[0]

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        lead = y.shape[:-1] if isinstance(y, Tensor) else ()
        out = self.func(t, self.unflatten(y))
        if not self.is_tuple:
            out = (out,)
        elif not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
            raise InvalidInput("func output", type(out).__name__,
                               f"a tuple of {len(self.shapes)} tensors (one per state in y0)")
        flat = []
        for i, (o, shape, dtype) in enumerate(zip(out, self.shapes, self.dtypes)):
            name = f"func output[{i}]" if self.is_tuple else "func output"
            if isinstance(y, Tensor) and not isinstance(o, Tensor):  # (Taylor mode passes jets through)
                raise InvalidInput(name, type(o).__name__, "a Tensor with the shape of y0")
            if tuple(o.shape) != (*lead, *shape):
                raise InvalidInput(f"{name} shape", str(tuple(o.shape)), f"{(*lead, *shape)} (the shape of y0)")
            flat.append((torch.view_as_real(o.to(dtype).resolve_conj()) if dtype.is_complex else o).reshape(*lead, -1))
        return torch.cat(flat, dim=-1)


def _real_view(y: Tensor) -> Tensor:
    """A complex tensor as its real view ``[*shape, 2]``; a real tensor itself."""
    return torch.view_as_real(y.resolve_conj()) if y.is_complex() else y


def _check_state(y0: Any, per_sample: bool = False) -> tuple[Tensor, list[Tensor] | None]:
    """The state as one real tensor, and the parts it was flattened from (None when ``y0`` is a
    real tensor, used as it is); ``per_sample``: each batch entry flattened on its own
    (``Tensor[B, n]``), and the parts are those of one entry."""
    if isinstance(y0, Tensor):
        tensors = [y0]
    elif isinstance(y0, (tuple, list)) and y0 and all(isinstance(y, Tensor) for y in y0):
        tensors = list(y0)
    else:
        raise InvalidInput("y0", type(y0).__name__, "a Tensor or a non-empty tuple of Tensors")
    first = _real_view(tensors[0])
    for i, y in enumerate(tensors):
        name = "y0" if isinstance(y0, Tensor) else f"y0[{i}]"
        real = _real_view(y)
        if real.is_floating_point() and (real.dtype, y.device) != (first.dtype, first.device):
            raise InvalidInput(f"{name} dtype/device", f"{y.dtype} on {y.device}",
                               f"{tensors[0].dtype} on {tensors[0].device} like y0[0] (or its complex dtype)")
        check_state(name, real)
    if isinstance(y0, Tensor) and not y0.is_complex():
        return y0, None
    if per_sample:
        _check_batches(tensors)
        return torch.cat([_real_view(y).reshape(len(y), -1) for y in tensors], dim=1), [y[0] for y in tensors]
    return torch.cat([_real_view(y).reshape(-1) for y in tensors]), tensors


def _check_batches(parts: list[Tensor]) -> None:
    """Per-sample tuple states: every part has the batch dimension first, of one size."""
    batch = parts[0].shape[0] if parts[0].dim() else "batch"
    for i, y in enumerate(parts):
        if y.dim() == 0 or y.shape[0] != batch:
            raise InvalidInput(f"y0[{i}] shape", str(tuple(y.shape)), f"[{batch}, ...]: in per-sample mode "
                               "every part of y0 has the batch dimension first, of the same size")


def _with_time_gradient(backend: Backend, problem: Problem, t: Tensor) -> Solution:
    """Solve, and make ys differentiable in t: dL/dt_i = f(t_i, y_i)·dL/dy_i for i ≥ 1 and
    dL/dt_0 = −f(t_0, y_0)·dL/dy_0 (through the solve). Exact for the continuous flow, the same
    rule torchdiffeq's adjoint uses; costs len(t) extra evaluations of func. Everything stays in
    y0's dtype (func's outputs are cast as in the solve), whatever t's dtype. Per-sample (``t:
    Tensor[B, n]``, ``ys: Tensor[B, n, ...]``) the same per entry, from each entry's own times."""
    t_fixed = problem.t
    axis = t_fixed.dim() - 1  # the time axis of ys: 0, or 1 after the batch axis of a per-sample solve
    entry = (-1,) * axis + (1,) * (problem.y0.dim() - axis)  # a time (per entry) against a state

    def slope(i: int, y: Tensor) -> Tensor:
        with torch.no_grad():
            return check_func_output(problem.func(t_fixed.select(-1, i), y), y)

    shift0 = (t.select(-1, 0) - t_fixed.select(-1, 0)).to(problem.y0.dtype).reshape(entry)
    solution = backend.solve(problem.with_y0(problem.y0 - shift0 * slope(0, problem.y0)))
    ys = solution.ys
    count = t_fixed.shape[-1]
    slopes = torch.stack([slope(i, ys.select(axis, i)) for i in range(1, count)], dim=axis)
    solution.stats.nfe_forward += count
    shifts = (t - t_fixed).narrow(-1, 1, count - 1).to(ys.dtype)
    shifts = shifts.reshape(*shifts.shape, *([1] * (ys.dim() - shifts.dim())))
    solution.ys = torch.cat([problem.y0.unsqueeze(axis), ys.narrow(axis, 1, count - 1) + shifts * slopes], dim=axis)
    return solution


def _solve_problem(backend: Backend, problem: Problem, t: Tensor) -> Solution:
    """Solve ``problem`` through ``backend``, differentiable in the output times ``t`` when they
    require grad."""
    return _with_time_gradient(backend, problem, t) if t.requires_grad else backend.solve(problem)


def _batch_size(shapes: list[torch.Size]) -> int:
    """Batch entries of a state with parts of these shapes: their common first dimension when one
    part has two or more dimensions (a tuple state ``(x [B, d], logp [B])`` has B entries), else 1."""
    firsts = {shape[0] if len(shape) else None for shape in shapes}
    if len(firsts) == 1 and None not in firsts and any(len(shape) >= 2 for shape in shapes):
        return max(1, firsts.pop())
    return 1


def _dynamic_solution(backend: Backend, solver: Integrator, func: Callable, y0: Tensor, t: Tensor,
                      config: IntegrationConfig, params: tuple[Tensor, ...], regularization: Regularizer | None,
                      dense: bool, events: tuple[Event, ...]) -> Solution:
    """The solve through ``backend`` (the usual case): ``y0`` at every time when there is nothing
    to integrate, else the problem solved with events and regularization attached."""
    if t.shape[-1] == 1 or y0.numel() == 0:  # nothing to integrate: y0 at every time
        axis = t.dim() - 1  # per-sample outputs are [B, n, ...]
        solution = Solution(ys=y0.unsqueeze(axis).expand(*y0.shape[:axis], t.shape[-1], *y0.shape[axis:]).clone())
        if regularization is not None:
            solution.regularization = y0.new_zeros(())
        return solution
    shapes = func.shapes if isinstance(func, _FlatTupleFunc) else [y0.shape]
    if config.per_sample:
        shapes = [torch.Size((len(y0), *shape)) for shape in shapes]
    problem = Problem(func=func, y0=y0, t=t.detach(), solver=solver, config=config, params=params,
                      keep_dense=dense, batch_size=_batch_size(shapes))
    if regularization is not None:
        problem, finish = regularization.attach(problem)
    run = partial(_solve_problem, backend)
    unflatten = func.unflatten if isinstance(func, _FlatTupleFunc) else None
    solution = solve_events(problem, t, events, unflatten, run) if events else run(problem, t)
    if regularization is not None:
        solution, solution.regularization = finish(solution)
    return solution


def _static_solution(static: StaticTimes, solver: Integrator, func: Callable, y0: Tensor, t: Tensor,
                     build_config: Callable[[], IntegrationConfig], plain: bool) -> Solution:
    """The solve of a model that ``odegrad.export`` records or traces (:class:`StaticTimes`): fixed
    steps through output times read once; ``plain``: no dense output, events or regularization."""
    if not plain:
        raise ExportError("cannot export an ODE solve with dense output, events or regularization inside "
                          "the model: they have no static graph; call odeint with the output times only")
    return Solution(ys=static.solve(solver, func, y0, t, build_config))


def _check_capabilities(solver: Integrator, backend: Backend, dense: Any, events: tuple[Event, ...],
                        regularization: Regularizer | None) -> None:
    """Refuse what the solver, the backend or a ``torch.func`` transform cannot do, before any solve."""
    if not isinstance(dense, bool):
        raise InvalidInput("dense", dense, "True or False")
    name = getattr(solver, "name", solver)
    if (dense or events) and not solver.has_dense_output:
        raise UnsupportedCombination(f"dense output and events need a method with dense output; {name!r} "
                                     "has none (use an odegrad method such as dopri5 or rk4)")
    if events and regularization is not None:
        raise UnsupportedCombination("events and regularization cannot be combined in one solve")
    transforms = active_transforms()
    if transforms and isinstance(backend, AdjointBackend):
        raise UnsupportedCombination(f"gradient={backend.name!r} under torch.func transforms "
                                     f"({', '.join(sorted(transforms))}): use gradient='direct'")
    if "vmap" in transforms and solver.error_estimate:
        raise UnsupportedCombination(
            f"the adaptive method {name!r} under torch.func.vmap: its step size depends on the values "
            "of each batch member. Use a fixed-step method (rk4, ...), or give y0 a batch dimension "
            "instead of vmapping (the batch then shares one step size)")


def _per_sample_mode(options: Mapping[str, Any] | None, t: Any) -> bool:
    """Whether the solve is per sample: ``options['per_sample']`` (checked), or a 2-D ``t``."""
    flag = options.get("per_sample", False) if isinstance(options, Mapping) else False
    if not isinstance(flag, bool):
        raise InvalidInput("options['per_sample']", flag, "True or False")
    two_d = isinstance(t, Tensor) and t.dim() == 2
    if two_d and isinstance(options, Mapping) and options.get("per_sample") is False:
        raise InvalidInput("t shape", str(tuple(t.shape)), "a 1-D tensor of times: a 2-D t (one row per batch "
                           "entry) asks for per-sample solving, which options['per_sample'] = False refuses")
    return flag or two_d


def _with_per_sample(options: Mapping[str, Any] | None, per_sample: bool) -> Mapping[str, Any] | None:
    """``options`` with ``per_sample`` set where a 2-D ``t`` implied it."""
    if not per_sample or (options is not None and "per_sample" in options):
        return options
    return {**(options or {}), "per_sample": True}


def _check_per_sample(solver: Integrator, dense: bool, events: tuple[Event, ...],
                      regularization: Regularizer | None, static: StaticTimes | None) -> None:
    """Refuse what per-sample solving cannot do: methods other than odegrad's explicit adaptive
    Runge–Kutta methods (fixed-step, TL-NODE, implicit, the torchdiffeq adapter), dense output,
    events, regularization and export recording."""
    name = getattr(solver, "name", solver)
    if not solves_per_sample(solver):
        raise UnsupportedCombination(
            f"options['per_sample'] (or a 2-D t) with the method {name!r}: per-sample solving runs odegrad's "
            "explicit adaptive Runge-Kutta methods (dopri5, tsit5, bosh3, ...); fixed-step methods, TL-NODE, "
            "implicit methods and the torchdiffeq adapter share one step for the batch")
    unsupported = [what for what, asked in (("dense=True", dense), ("events", events),
                                            ("regularization", regularization is not None),
                                            ("odegrad.export", static is not None)) if asked]
    if unsupported:
        raise UnsupportedCombination(f"options['per_sample'] (or a 2-D t) cannot be combined with "
                                     f"{', '.join(unsupported)}")


def solve(func: Callable, y0: State, t: Tensor, *, method: str | Integrator = "dopri5",
          gradient: str | Backend = "direct", rtol: Tolerance = 1e-7, atol: Tolerance = 1e-9,
          options: Mapping[str, Any] | None = None, params: Iterable[Tensor] | None = None,
          regularization: Regularizer | None = None, dense: bool = False,
          events: Sequence[Event] | None = None) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` and report outputs, cost and per-step data.

    Args:
        func: ``func(t, y) -> dy/dt`` with ``t`` a 0-dim tensor and the output shaped like ``y``
            (a tuple of tensors when ``y0`` is a tuple).
        y0: initial state, ``Tensor[*shape]`` of any shape (batch dimensions included) or a tuple.
        t: ``Tensor[T]`` strictly increasing or strictly decreasing output times; ``t[0]`` is the
            initial time. Or ``Tensor[B, T]``: one row of output times per batch entry (each row
            strictly monotone, rows may differ), which asks for per-sample solving.
        method: integrator name (``solver_names()``, ``"torchdiffeq:<name>"``) or an Integrator.
        gradient: backend name (``backend_names()``) or a configured Backend.
        rtol, atol: tolerances of adaptive methods (a :data:`Tolerance`: numbers, per-element
            tensors, or one per part of a tuple state).
        options: ``max_steps``; fixed-step: ``step_size``, ``grid`` or ``grid_constructor``,
            ``perturb``; adaptive: ``first_step``, ``norm``, ``controller`` or
            ``safety``/``ifactor``/``dfactor``, ``step_t``, ``jump_t``, ``per_sample`` (the first
            dimension of y0 indexes independent problems, each with its own steps; func then
            receives ``t: Tensor[B]``) (docs: Getting started, Options, Per-sample solving).
        params: tensors to differentiate by adjoint-type backends (default: ``func.parameters()``
            when func is an ``nn.Module``).
        regularization: None or a :mod:`odegrad.regularization` term (``LocalRegularization``,
            ``Kinetic``, ``TaylorOrder``), returned as ``Solution.regularization``.
        dense: keep the dense output: ``Solution.evaluate(t)`` / ``Solution.derivative(t)`` at
            any times in the span. Differentiable in y0 and func's parameters under ``direct``;
            adjoint-type backends solve without a graph, so there only the values (and d/dt)
            are available — put times that need gradients into ``t`` (output times never
            shorten steps, so they get the same values).
        events: :class:`~odegrad.events.Event` objects (see :mod:`odegrad.events`): a terminal
            event that fires ends the solve there (``ys`` then holds the output times before it
            and, last, the state at ``Solution.event_t``); every firing time is in
            ``Solution.event_times``, differentiable with every backend. With a terminal event
            ``t[-1]`` may be ±inf (search until it fires, up to ``max_steps``; fixed-step
            methods then need ``options["step_size"]``).

    Returns:
        Solution with ``ys: Tensor[T, *shape]`` (``Tensor[B, T, ...]`` for a per-sample ``t:
        Tensor[B, T]``; tuple for tuple states), ``stats``, ``steps``
        and, with ``regularization``, the scalar term ``regularization`` (differentiable in
        func's parameters; add it to the loss).

    Under ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``) value checks stand aside;
    transforms need ``gradient="direct"``, and ``vmap`` a fixed-step method (an adaptive step size
    depends on the values of each batch member; batch ``y0`` directly to share one step size).
    """
    return _solve(func, y0, t, method=method, gradient=gradient, rtol=rtol, atol=atol, options=options,
                  params=params, regularization=regularization, dense=dense, events=events,
                  record_stiffness=True)


def _solve(func: Callable, y0: State, t: Tensor, *, method: str | Integrator, gradient: str | Backend,
           rtol: Tolerance, atol: Tolerance, options: Mapping[str, Any] | None,
           params: Iterable[Tensor] | None, record_stiffness: bool, regularization: Regularizer | None = None,
           dense: bool = False, events: Sequence[Event] | None = None) -> Solution:
    """:func:`solve`; ``record_stiffness`` False where nobody reads ``Solution.steps`` (``odeint``)."""
    if not callable(func):
        raise InvalidInput("func", type(func).__name__, "a callable func(t, y)")
    solver = get_solver(method)
    backend = get_backend(gradient)
    params = resolve_params(func, params, adjoint=isinstance(backend, AdjointBackend))
    check_signature(func)
    events = () if events is None else check_events(events)
    _check_capabilities(solver, backend, dense, events, regularization)
    per_sample = _per_sample_mode(options, t)
    if per_sample:
        _check_per_sample(solver, dense, events, regularization, StaticTimes.active())
    flat_y0, parts = _check_state(y0, per_sample)
    shared_times = not (isinstance(t, Tensor) and t.dim() == 2)
    t = (check_sample_times(t, flat_y0) if per_sample
         else check_times(t, flat_y0, open_end=any(event.terminal for event in events)))
    regularization = check_regularizer(regularization)
    flat_func = func if parts is None else _FlatTupleFunc(func, parts, is_tuple=not isinstance(y0, Tensor))
    shapes = flat_func.real_shapes if isinstance(flat_func, _FlatTupleFunc) and flat_func.is_tuple else None
    build_config = partial(make_config, solver, rtol, atol, _with_per_sample(options, per_sample), func=flat_func,
                           y0=flat_y0, t=t, shapes=shapes)
    static = StaticTimes.active()
    if static is not None:  # odegrad.export records or traces the caller
        solution = _static_solution(static, solver, flat_func, flat_y0, t, build_config,
                                    plain=not (dense or events or regularization is not None))
    else:
        config = build_config()
        config.record_stiffness = record_stiffness
        solution = _dynamic_solution(backend, solver, flat_func, flat_y0, t, config, params,
                                     regularization, dense, events)
    if per_sample and shared_times:  # one t for all entries: the usual [n, B, ...] layout
        solution.ys = solution.ys.transpose(0, 1)
    if isinstance(flat_func, _FlatTupleFunc):
        solution.ys = flat_func.unflatten(solution.ys)
        if solution.dense is not None:
            solution.dense.map_output(flat_func.unflatten)
    return solution


def odeint(func: Callable, y0: State, t: Tensor, *, method: str | Integrator = "dopri5",
           gradient: str | Backend = "direct", rtol: Tolerance = 1e-7, atol: Tolerance = 1e-9,
           options: Mapping[str, Any] | None = None,
           params: Sequence[Tensor] | None = None,
           event_fn: Callable | None = None) -> State | tuple[Tensor, State]:
    """Drop-in for ``torchdiffeq.odeint``: returns ``Tensor[len(t), *y0.shape]`` (a tuple of such
    for tuple states). See :func:`solve` for the arguments.

    With ``event_fn(t, y) -> Tensor`` (torchdiffeq's event mode) ``t`` holds the start (and
    optionally a second time that gives the direction, otherwise ignored); the solve runs until
    event_fn crosses zero and returns ``(event_t, ys)``, ``ys = [y0, y(event_t)]``, with
    ``event_t`` differentiable (see :mod:`odegrad.events`)."""
    return _odeint_result(func, y0, t, event_fn, method=method, gradient=gradient, rtol=rtol,
                          atol=atol, options=options, params=params)


def _event_span(t: Any) -> Tensor:
    """odeint's ``t`` in event mode as ``[t0, ±inf]``: t[0] starts the search, a t[1] gives its
    direction (as torchdiffeq, which ignores it otherwise)."""
    if not isinstance(t, Tensor) or t.dim() != 1 or t.numel() not in (1, 2) or not t.is_floating_point():
        raise InvalidInput("t", getattr(t, "shape", type(t).__name__),
                           "a floating-point tensor of 1 or 2 times with event_fn (t[0] starts the search, "
                           "t[1] gives its direction)")
    direction = -1.0 if t.numel() == 2 and float(t[1]) < float(t[0]) else 1.0
    return torch.cat([t[:1], t.new_full((1,), direction * math.inf)])


def _odeint_result(func: Callable, y0: State, t: Tensor, event_fn: Callable | None,
                   **settings: Any) -> State | tuple[Tensor, State]:
    """``solve(...).ys``, or with ``event_fn`` ``(event_t, [y0, y(event_t)])`` (torchdiffeq's event mode)."""
    if event_fn is None:
        return _solve(func, y0, t, record_stiffness=False, **settings).ys
    solution = _solve(func, y0, _event_span(t), events=[Event(event_fn)], record_stiffness=False, **settings)
    return solution.event_t, solution.ys


def odeint_event(func: Callable, y0: State, t0: Tensor | float, *, event_fn: Callable,
                 reverse_time: bool = False, odeint_interface: Callable = odeint,
                 **kwargs: Any) -> tuple[Tensor, State]:
    """Drop-in for ``torchdiffeq.odeint_event``: integrate from ``t0`` until ``event_fn(t, y)``
    crosses zero (backwards in time with ``reverse_time``).

    Args:
        func, y0: as for :func:`odeint`.
        t0: the start time (a 0-dim tensor or a number; may require grad).
        event_fn: ``event_fn(t, y) -> Tensor``; the event is where any entry changes sign.
        reverse_time: search towards decreasing times.
        odeint_interface: :func:`odeint` or :func:`odeint_adjoint` (anything taking ``event_fn``).
        **kwargs: passed on (``method``, ``gradient``, ``rtol``, ``atol``, ``options``, ...).

    Returns:
        ``(event_t, solution)``: the event time (0-dim, differentiable by the implicit function
        theorem with every gradient backend) and ``solution = [y0, y(event_t)]``.
    """
    start = (t0 if isinstance(t0, Tensor) else torch.tensor(t0, dtype=torch.get_default_dtype())).reshape(1)
    t = torch.cat([start, start.detach() + (-1.0 if reverse_time else 1.0)])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)


def _adjoint_backend(gradient: str, rtol: float | None, atol: float | None,
                     method: str | Integrator | None, options: Mapping[str, Any] | None) -> AdjointBackend:
    """The adjoint-type backend ``odeint_adjoint``'s ``adjoint_*`` arguments describe: any backend
    of the one registry (``register_backend``) that is an :class:`AdjointBackend`."""
    backend = get_backend(gradient) if isinstance(gradient, str) else None
    if not isinstance(backend, AdjointBackend):
        adjoint_names = [name for name in (*backend_names(), *BACKEND_ALIASES)
                         if isinstance(get_backend(name), AdjointBackend)]
        raise InvalidInput("gradient", gradient, "one of " + ", ".join(map(repr, adjoint_names))
                           + " (odeint_adjoint computes gradients by an adjoint method)")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidInput("adjoint_options", type(options).__name__, "a dict such as {'norm': 'seminorm'}")
    for key, value in options.items():
        if key != "norm":
            raise UnsupportedCombination(
                f"adjoint_options[{key!r}]: odegrad's backward solves take the forward options "
                f"(options=...) with adjoint_rtol/adjoint_atol/adjoint_method; only "
                f"adjoint_options['norm'] = 'seminorm' is passed on")
        if value not in ("seminorm", "default"):
            raise InvalidInput("adjoint_options['norm']", value,
                               "'seminorm' (leave the parameter-gradient integral out of the backward "
                               "error norm) or 'default'; a norm callable over the augmented state is not "
                               "supported")
    return backend.with_settings(rtol=rtol, atol=atol, method=method, seminorm=options.get("norm") == "seminorm")


def odeint_adjoint(func: Callable, y0: State, t: Tensor, *, rtol: Tolerance = 1e-7, atol: Tolerance = 1e-9,
                   method: str | Integrator = "dopri5", options: Mapping[str, Any] | None = None,
                   adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | Integrator | None = None,
                   adjoint_options: Mapping[str, Any] | None = None,
                   adjoint_params: Iterable[Tensor] | None = None, gradient: str = "backsolve",
                   event_fn: Callable | None = None) -> State | tuple[Tensor, State]:
    """Drop-in for ``torchdiffeq.odeint_adjoint``: :func:`odeint` with an adjoint-type gradient.

    Args:
        func, y0, t, rtol, atol, method, options: as for :func:`odeint`.
        adjoint_rtol, adjoint_atol, adjoint_method: tolerances and integrator of the backward
            solves (None: the forward ones), as in torchdiffeq.
        adjoint_options: ``{"norm": "seminorm"}`` leaves the parameter-gradient integral out of
            the backward error norm (Kidger et al. 2021); the backward solves otherwise take the
            forward ``options``, so other keys are refused.
        adjoint_params: the tensors to differentiate (``params`` of :func:`odeint`; default:
            ``func.parameters()`` when func is an ``nn.Module``).
        gradient: ``"backsolve"`` (alias ``"adjoint"``: torchdiffeq's classic adjoint), ``"gq"``,
            ``"interp"`` or any adjoint-type backend added with ``register_backend`` (the one
            registry ``odeint(gradient=...)`` reads), built with the ``adjoint_*`` settings.
        event_fn: torchdiffeq's event mode, as for :func:`odeint`: returns ``(event_t, ys)``.

    Returns:
        ``Tensor[len(t), *y0.shape]`` (a tuple of such for tuple states).

    Raises:
        InvalidInput: ``gradient`` is not an adjoint-type backend name, or ``adjoint_options``
            is not a dict with a valid ``norm``.
        UnsupportedCombination: ``adjoint_options`` holds a key other than ``norm``.
    """
    backend = _adjoint_backend(gradient, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options)
    return _odeint_result(func, y0, t, event_fn, method=method, gradient=backend, rtol=rtol, atol=atol,
                          options=options, params=adjoint_params)
