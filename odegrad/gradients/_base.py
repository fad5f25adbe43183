"""The gradient-backend contract and the pieces shared by adjoint-type backends.

A backend receives a :class:`Problem` (func, y0, t, forward integrator, its configuration and the
parameters to differentiate) and returns a :class:`~odegrad.solvers.Solution` whose ``ys`` carry
a correct backward pass to ``y0`` and ``params``. Gradients with respect to ``t`` are added for all
backends alike by :mod:`odegrad.api` (they only need f at the output times).

Adjoint-type backends subclass :class:`AdjointBackend` and implement two hooks:
``forward_pass`` (solve without a graph, keep what the backward needs) and ``backward_pass``
(given dL/dys, return dL/dy0 and dL/dθ). Everything else — the autograd.Function, NFE accounting,
zero gradients for unused parameters — lives here once.
"""

from __future__ import annotations

import copy
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from .._checks import check_non_negative
from .._counting import check_func_output
from ..errors import InvalidInput, NonFiniteValue, ReverseSolveDrift, UnsupportedCombination
from ..solvers import (
    IntegrationConfig,
    Integrator,
    Solution,
    TimeAxis,
    bad_batch_entries,
    fixed_grid,
    get_solver,
    rms_norm,
    solves_per_sample,
)


@dataclass(frozen=True)
class Problem:
    """One solve request as a backend sees it. ``t`` is detached; ``y0`` is a single tensor
    (tuple states are flattened by the api); ``params`` are the tensors to differentiate.

    Attributes:
        func: the right-hand side ``func(t, y)``.
        y0: initial state, ``Tensor[*shape]``.
        t: output times, a strictly monotone 1-D tensor (detached).
        solver: the forward integrator.
        config: the forward solve's configuration.
        params: the tensors gradients are taken with respect to (func's parameters).
        keep_dense: the forward solve also returns its dense output (``Solution.dense``).
        batch_size: the number of batch entries of the user's state (the first dimension of a
            state, or of every part of a tuple state, with two or more dimensions; else 1), by
            which batch-averaged terms (regularizers) divide.
    """

    func: Any
    y0: Tensor
    t: Tensor
    solver: Integrator
    config: IntegrationConfig
    params: tuple[Tensor, ...]
    keep_dense: bool = False
    batch_size: int = 1

    def with_y0(self, y0: Tensor) -> Problem:
        """The same problem from another initial state."""
        return replace(self, y0=y0)


class Backend(ABC):
    """How gradients of a solve are computed."""

    name: str = "backend"

    @abstractmethod
    def solve(self, problem: Problem) -> Solution:
        """Solve forward; ``Solution.ys`` must backpropagate correctly to y0 and params."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def func_vjp(func, t: Tensor, y: Tensor, a: Tensor, params: tuple[Tensor, ...]
             ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """f(t, y) (cast to y's dtype) and the vector–Jacobian products aᵀ∂f/∂y and aᵀ∂f/∂θ — zeros
    for what f does not depend on: unused θ, and y itself for fields such as dy/dt = g(t)."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        f = check_func_output(func(t, y), y)
        if not f.requires_grad:
            return f.detach(), torch.zeros_like(y), tuple(torch.zeros_like(p) for p in params)
        grads = vjp(f, (y, *params), a)
    vjp_y = grads[0] if grads[0] is not None else torch.zeros_like(y)
    vjp_params = tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads[1:], params))
    return f.detach(), vjp_y, vjp_params


def vjp(f: Tensor, inputs: tuple[Tensor, ...] | list[Tensor], v: Tensor) -> tuple[Tensor | None, ...]:
    """``vᵀ ∂f/∂inputs`` by ``torch.autograd.grad`` (None for inputs f does not use).

    Raises:
        InvalidInput: f reaches ``inputs`` through a graph built before the solve (func closes over
            a non-leaf tensor computed from params), which the first backward pass freed.
    """
    try:
        return torch.autograd.grad(f, inputs, v, allow_unused=True)
    except RuntimeError as error:
        if "backward through the graph a second time" not in str(error):
            raise
        raise InvalidInput(
            "func", "a func that uses a tensor computed from params before the solve (a non-leaf "
            "tensor, e.g. m = 2 * W in its closure)", "a func that computes everything from params "
            "on each call", hint="adjoint-type backends backpropagate through func once per "
            "evaluation, and the graph behind such a tensor is freed after the first. Compute it "
            "inside func, pass that tensor itself in params=, or use gradient='direct'") from None


def require_finite(x: Tensor, what: str, *, t: float | None = None, phase: str = "backward") -> None:
    """Raise :class:`NonFiniteValue` naming ``what`` if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteValue(what, t=t, bad_indices=bad_batch_entries(x), phase=phase)


REVERSE_DRIFT_FACTOR = 1e3
"""How many tolerance units (see :func:`drift_unit`) the state rebuilt by a backward solve may miss
the stored forward state by. The miss relative to the trajectory's magnitude is, to first order,
the relative error it puts into the gradient (the vector–Jacobian products are evaluated at the
rebuilt state: for a field linear in y the parameter gradient ∫ a yᵀ dt errs by exactly
∫ a Δyᵀ dt), and a unit is the relative accuracy the solves can deliver; so 1000 units allow a
gradient three orders of magnitude less accurate than the solve before refusing. A stable reverse
solve misses by the forward plus backward errors of one stretch, a few units (measured on
torchdiffeq's y' = y³A test: about 3.5 in float64, up to 15 in float32); an unstable one
(dissipative dynamics run backwards) by 1e5 to 1e49 (y' = diag(−1, −λ) y, λ = 10 / 30 / 60)."""
FIXED_STEP_DRIFT_RTOL = 1e-3
"""Tolerance unit of the drift check for fixed-step methods, whose accuracy no tolerance states."""


def drift_unit(rtol: float, atol: float, scale: float | Tensor, dtype: torch.dtype,
               steps: int | Tensor) -> float | Tensor:
    """The absolute miss one tolerance unit of the drift check stands for, on a trajectory of
    magnitude ``scale`` (max |y| over the stored outputs) rebuilt by ``steps`` backward steps.

    It is the larger of what the tolerances ask for, ``atol + rtol·scale`` (on the trajectory's
    magnitude, not per component: the global error of a component passing through zero holds the
    errors of the components it couples to), and what ``dtype`` can represent over the solve:
    each step rounds the state once, by about eps·|y|, so ``steps`` backward steps and the about
    as many forward steps over the same stretch accumulate ``eps·sqrt(2·steps)·scale`` (rounding
    errors add as a random walk; the factor :data:`REVERSE_DRIFT_FACTOR` covers systematic
    rounding). Without this floor a float32 solve at rtol 1e-7 — finer than float32 resolves —
    reads its rounding as drift. Tensors ``scale`` and ``steps`` (one per batch entry of a
    per-sample sweep) give one unit per entry."""
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    if isinstance(scale, Tensor):
        roundoff = eps * torch.sqrt(2.0 * steps.clamp(min=1).to(scale.dtype)) * scale
        return (atol + rtol * scale).maximum(roundoff).clamp(min=tiny)
    roundoff = eps * math.sqrt(2 * max(steps, 1)) * scale
    return max(atol + rtol * scale, roundoff, tiny)


def drift_tolerances(backward: IntegrationConfig, forward: IntegrationConfig) -> tuple[float, float]:
    """``(rtol, atol)`` of the drift check of an adaptive reverse solve configured by ``backward``
    against the forward solve's ``forward``: the looser of the two (the miss holds both solves'
    errors)."""
    (rtol, atol), (forward_rtol, forward_atol) = (backward.controller.scalar_tolerances(),
                                                  forward.controller.scalar_tolerances())
    return max(rtol, forward_rtol), max(atol, forward_atol)


def check_reverse_drift(backend: str, rebuilt: Tensor, ys: Tensor, segment: int, t_start: float,
                        problem: Problem, config: IntegrationConfig, on_drift: str, steps: int) -> None:
    """Compare the state a backward solve (configured by ``config``) rebuilt at output time
    ``t_start`` with the stored forward state ``ys[segment]``, after ``steps`` accepted backward
    steps since y was last taken from the stored outputs; past :data:`REVERSE_DRIFT_FACTOR` units
    of :func:`drift_unit` raise :class:`ReverseSolveDrift` (or warn). The tolerances are
    :func:`drift_tolerances`; for fixed-step methods, whose accuracy no tolerance states,
    :data:`FIXED_STEP_DRIFT_RTOL`."""
    stored = ys[segment]
    if problem.solver.error_estimate:
        rtol, atol = drift_tolerances(config, problem.config)
    else:
        rtol, atol = FIXED_STEP_DRIFT_RTOL, 0.0
    unit = drift_unit(rtol, atol, float(ys.abs().max()), stored.dtype, steps)
    drift = float((rebuilt - stored).abs().max()) / unit
    if drift > REVERSE_DRIFT_FACTOR:
        refuse_drift(backend, f"the forward state at the start of observation segment {segment} (t={t_start:.6g})",
                     drift, f"the {stored.dtype} rounding of {steps} steps", on_drift, segment)


def refuse_drift(backend: str, missed: str, drift: float, floor: str, on_drift: str, segment: int) -> None:
    """Raise :class:`ReverseSolveDrift` (``on_drift="raise"``) or warn: the state a backward solve of
    ``backend`` rebuilt misses ``missed`` (which stored output) by ``drift`` tolerance units, the
    unit floored at ``floor`` (what rounding it allows for)."""
    message = (f"gradient={backend!r}: the state rebuilt by solving backwards misses {missed} by {drift:.3g} "
               f"tolerance units (allowed {REVERSE_DRIFT_FACTOR:g}; a unit is atol + rtol·max|y|, at least "
               f"{floor}): the dynamics are unstable in reverse time (e.g. dissipative), so these gradients "
               "would be wrong. Use gradient='interp' (no reverse solve of y) or 'direct'")
    if on_drift == "raise":
        raise ReverseSolveDrift(message, segment=segment, drift=drift)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


@lru_cache(maxsize=64)
def legendre_rule(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Gauss–Legendre nodes (ascending in [−1, 1]) and weights, ``n`` of each, in Python floats:
    Newton's iteration on the Legendre polynomial Pₙ from Tricomi's initial guesses, the weights
    2 / ((1 − x²) Pₙ'(x)²) (numpy's ``leggauss`` to 1e-15 in the nodes, 1e-14 in the weights;
    plain float arithmetic, so ``torch.compile`` can trace a backward pass that needs a rule, where
    numpy's cannot)."""
    nodes, weights = [], []
    for i in range(1, n + 1):
        x = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p, slope = _legendre(n, x)
            step = p / slope
            x -= step
            if abs(step) < 1e-16:
                break
        _, slope = _legendre(n, x)
        nodes.append(x)
        weights.append(2.0 / ((1.0 - x * x) * slope * slope))
    return tuple(reversed(nodes)), tuple(reversed(weights))


def _legendre(n: int, x: float) -> tuple[float, float]:
    """Pₙ(x) and Pₙ'(x) by the three-term recurrence (|x| < 1)."""
    previous, p = 1.0, x
    for k in range(2, n + 1):
        previous, p = p, ((2 * k - 1) * x * p - (k - 1) * previous) / k
    if n == 0:
        return 1.0, 0.0
    return p, n * (x * p - previous) / (x * x - 1.0)


def flat_cat(tensors: tuple[Tensor, ...] | list[Tensor], like: Tensor) -> Tensor:
    """Concatenate flattened tensors (an empty tuple gives an empty vector of ``like``'s dtype)."""
    if not tensors:
        return like.new_zeros(0)
    return torch.cat([x.reshape(-1).to(like.dtype) for x in tensors])


def split_like(flat: Tensor, templates: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Inverse of :func:`flat_cat`: views of ``flat`` shaped (and typed) like ``templates``."""
    out, offset = [], 0
    for template in templates:
        n = template.numel()
        out.append(flat[offset:offset + n].view_as(template).to(template.dtype))
        offset += n
    return tuple(out)


def segment_grid(grid: list[float], a: float, b: float) -> list[float]:
    """The points of a fixed-step ``grid`` strictly inside (a, b), with a and b added, ordered
    from a to b: the same steps restricted to one segment (either direction)."""
    return [a, *TimeAxis.of(a, b).between(grid, a, b), b]


def same_steps_config(config: IntegrationConfig, solver: Integrator, times: list[float], a: float,
                      b: float) -> IntegrationConfig:
    """Config of a solve from ``a`` to ``b`` (a piece of the span of the forward output ``times``)
    that takes the steps the forward solve took there, whatever output times are added and in
    either direction: fixed-step methods get that part of the forward grid (``grid`` or
    ``step_size`` alike); adaptive ones are unchanged."""
    if solver.error_estimate:
        return config
    return replace(config, grid=segment_grid(fixed_grid(times, config), a, b), step_size=None)


MIN_NODE_MEMORY = 2 ** 18
"""Floor of the default node budgets of gq and interp (256 KiB): small models still evaluate many
nodes per call, where the per-call overhead, not memory, is what costs."""


def adjoint_state_bytes(y0: Tensor, params: tuple[Tensor, ...], copies: int) -> int:
    """Bytes of ``copies`` copies of the classic adjoint's augmented state [y, a, θ] for state
    ``y0`` (``Tensor[*shape]``) and ``params``, at least :data:`MIN_NODE_MEMORY`: the default
    memory budgets of the quadrature and interpolation backends, in units of what backsolve's
    solver holds anyway."""
    state = 2 * y0.numel() + sum(p.numel() for p in params)
    return max(MIN_NODE_MEMORY, copies * state * y0.element_size())


class BlockNorm:
    """Max over blocks of the RMS norm of each block of a flat augmented state — torchdiffeq's
    mixed norm. ``blocks_in_norm`` < number of blocks gives a seminorm (Kidger et al. 2021):
    trailing blocks (e.g. the parameter-gradient integral) do not drive step-size control.

    Args:
        sizes: sizes of the consecutive blocks of the flat state.
        blocks_in_norm: how many leading blocks enter the norm (None: all of them).
    """

    def __init__(self, sizes: tuple[int, ...], blocks_in_norm: int | None = None):
        self.sizes = sizes
        self.blocks_in_norm = len(sizes) if blocks_in_norm is None else blocks_in_norm

    def __call__(self, x: Tensor) -> Tensor:
        parts = torch.split(x, self.sizes)[: self.blocks_in_norm]
        return torch.stack([rms_norm(p) for p in parts if p.numel()]).max()


class AdjointBackend(Backend):
    """Base of backends with a hand-written backward pass (backsolve, gq, interp).

    Args:
        rtol, atol: tolerances of the backward solve (None: the forward ones).
        method: integrator of the backward solve (None: the forward one).
    """

    def __init__(self, rtol: float | None = None, atol: float | None = None,
                 method: str | Integrator | None = None):
        for name, value in (("rtol", rtol), ("atol", atol)):
            if value is not None:
                check_non_negative(f"{type(self).__name__} {name}", value)
        self.rtol = rtol
        self.atol = atol
        self.method = method

    seminorm_option: bool = False
    """Whether the backend has a ``seminorm`` setting (its backward state holds a parameter
    integral that the error norm may leave out); a backend without it always uses a seminorm or
    needs none."""

    def with_method(self, method: str | Integrator) -> AdjointBackend:
        """A copy of this backend whose backward solves use ``method``."""
        return self.with_settings(method=method)

    def with_settings(self, *, rtol: float | None = None, atol: float | None = None,
                      method: str | Integrator | None = None, seminorm: bool | None = None) -> AdjointBackend:
        """A copy of this backend with the given backward-solve settings (None keeps the current
        one): what ``odeint_adjoint``'s ``adjoint_rtol``/``adjoint_atol``/``adjoint_method`` and
        ``adjoint_options={"norm": "seminorm"}`` set on any registered adjoint-type backend.

        Raises:
            InvalidInput: a negative tolerance.
        """
        configured = copy.copy(self)
        for name, value in (("rtol", rtol), ("atol", atol)):
            if value is not None:
                setattr(configured, name, check_non_negative(f"{type(self).__name__} {name}", value))
        if method is not None:
            configured.method = method
        if seminorm is not None and self.seminorm_option:
            configured.seminorm = bool(seminorm)
        return configured

    def backward_solver(self, problem: Problem) -> Integrator:
        """The integrator of the backward solves: ``method`` if given, else the forward one.

        Raises:
            UnknownName: ``method`` names no registered integrator.
        """
        return problem.solver if self.method is None else get_solver(self.method)

    def check_pairing(self, problem: Problem) -> None:
        """Refuse, before any solve, a backward integrator that cannot integrate the adjoint
        system (a func calling ``torch.autograd.grad``)."""
        solver = self.backward_solver(problem)
        if problem.t.dim() == 2 and type(self).per_sample_backward_pass is AdjointBackend.per_sample_backward_pass:
            raise UnsupportedCombination(f"gradient={self.name!r} has no per-sample backward pass (options["
                                         "'per_sample'] or a 2-D t); use 'direct', 'backsolve', 'gq' or 'interp'")
        if problem.t.dim() == 2 and not solves_per_sample(solver):
            raise UnsupportedCombination(
                f"{type(self).__name__}(method={getattr(solver, 'name', solver)!r}) in per-sample mode: its "
                "backward sweep is per sample too, which needs an explicit adaptive Runge-Kutta method "
                "(dopri5, tsit5, bosh3, ...); leave method unset to use the forward one")
        if not solver.supports_autograd_func:
            raise UnsupportedCombination(
                f"gradient={self.name!r} integrates an adjoint system built with torch.autograd.grad, "
                f"which the integrator {getattr(solver, 'name', solver)!r} cannot integrate; give the "
                f"backend another backward method, e.g. {type(self).__name__}(method='rk4'), or use "
                f"gradient='direct'")

    def backward_config(self, problem: Problem, **changes: Any) -> IntegrationConfig:
        """The forward config for the backward solve with this backend's ``rtol``/``atol`` (when
        set) and the controller ``changes`` (e.g. ``norm=``) applied."""
        return problem.config.for_backward(self.rtol, self.atol).with_controller(**changes)

    def forward_pass(self, problem: Problem) -> tuple[Solution, Any]:
        """Solve without building a graph; return the solution and what ``backward_pass`` needs."""
        solution = problem.solver.integrate(problem.func, problem.y0, problem.t, problem.config,
                                            keep_dense=problem.keep_dense)
        return solution, None

    @abstractmethod
    def backward_pass(self, problem: Problem, ys: Tensor, context: Any, grad_ys: Tensor
                      ) -> tuple[Tensor, tuple[Tensor, ...], int]:
        """Return (dL/dy0, dL/dθ per param, NFE spent) given dL/dys of shape [len(t), *y0.shape]."""

    def per_sample_backward_pass(self, problem: Problem, ys: Tensor, context: Any, grad_ys: Tensor
                                 ) -> tuple[Tensor, tuple[Tensor, ...], int]:
        """:meth:`backward_pass` of a per-sample solve (``ys``, ``grad_ys``: ``Tensor[B, n, ...]``);
        backends that have one override it (:mod:`._per_sample` holds their shared sweep)."""
        raise UnsupportedCombination(f"gradient={self.name!r} has no per-sample backward pass")

    def traced_solve(self, problem: Problem) -> Solution | None:
        """The solve with a traced backward pass (one graph under ``torch.compile``), or None where
        this backend has none for ``problem`` (see :mod:`._traced_adjoint`)."""
        return None

    def solve(self, problem: Problem) -> Solution:
        """Solve by ``forward_pass`` inside an autograd Function whose backward calls
        ``backward_pass``; its NFE is added to ``Solution.stats.nfe_backward`` when it runs. Where
        :meth:`traced_solve` gives a solve, that one instead.

        Raises:
            UnsupportedCombination: the backward integrator cannot integrate the adjoint system
                (checked before the forward solve).
        """
        self.check_pairing(problem)
        traced = self.traced_solve(problem)
        return self._eager_solve(problem) if traced is None else traced

    @torch.compiler.disable(recursive=True)
    def _eager_solve(self, problem: Problem) -> Solution:
        holder: dict[str, Solution] = {}
        ys = _AdjointFunction.apply(self, problem, holder, problem.y0, *problem.params)
        solution = holder["solution"]
        solution.ys = ys
        return solution


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, backend: AdjointBackend, problem: Problem, holder: dict, y0: Tensor,
                *params: Tensor) -> Tensor:
        with torch.no_grad():
            solution, context = backend.forward_pass(problem.with_y0(y0.detach()))
        holder["solution"] = solution
        ctx.backend, ctx.problem, ctx.context, ctx.stats = backend, problem, context, solution.stats
        ys = solution.ys
        ctx.save_for_backward(ys)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        if torch.is_grad_enabled():  # autograd enables grad in backward only for create_graph=True
            raise UnsupportedCombination(
                f"gradient={ctx.backend.name!r} with a differentiable backward pass (create_graph=True, "
                "e.g. torch.autograd.grad for a gradient penalty or a Hessian-vector product): its "
                "hand-written backward pass is not differentiable, so the second-order terms would "
                "silently be missing; use gradient='direct'")
        (ys,) = ctx.saved_tensors
        require_finite(grad_ys, "the incoming gradient dL/dys (from the loss, upstream of odeint)",
                       phase="incoming gradient")
        with torch.no_grad():
            backward = (ctx.backend.per_sample_backward_pass if ctx.problem.t.dim() == 2
                        else ctx.backend.backward_pass)
            try:
                grad_y0, grad_params, nfe = backward(ctx.problem, ys, ctx.context, grad_ys)
            except NonFiniteValue as error:
                raise NonFiniteValue(f"the adjoint system integrated by {ctx.backend.name} (a = dL/dy "
                                     "backwards through func's vector-Jacobian products)",
                                     t=error.t, nfe=error.nfe, bad_indices=error.bad_indices,
                                     phase="backward") from None
        ctx.stats.nfe_backward += nfe
        return (None, None, None, grad_y0, *grad_params)


def continue_steps(solver: Integrator, config: IntegrationConfig, sol: Solution, forward: IntegrationConfig
                    ) -> IntegrationConfig:
    """Start the next segment's adaptive solve with the last accepted step of this one: the
    segments are adjacent pieces of one backward trajectory, so this step size fits and the
    initial-step heuristic (an extra evaluation and restart cost per segment) is skipped."""
    if not solver.error_estimate or forward.controller.first_step is not None or sol.steps is None \
            or not len(sol.steps.h):
        return config
    return config.with_controller(first_step=abs(float(sol.steps.h[-1])))
