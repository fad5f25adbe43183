"""``odegrad`` as a drop-in for torchdiffeq (issue 14): the same problems run through the installed
torchdiffeq and through odegrad, and the outputs and their gradients (w.r.t. y0, func's parameters
and, where a case asks, t) are compared within the methods' tolerances.

Every compared case is one :class:`Case` in ``CASES``: a problem builder and two solves, ``ours``
and ``theirs``, each mapping a fresh :class:`OdeProblem` to an output (a tensor, a tuple of
tensors, or nested tuples such as an event's ``(event_t, ys)``). New kinds of case append to
``CASES`` (through a ``_*_cases()`` generator) and need no new test function. The tests after the
compared cases check what odegrad refuses, by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torchdiffeq
from torch import Tensor, nn

import odegrad
from odegrad.errors import InvalidInput, UnknownName, UnsupportedCombination
from odegrad.testing import RandomProjectionLoss, registered_pairs

D = torch.float64
SHARED_METHODS = {"dopri5": "dopri5", "bosh3": "bosh3", "euler": "euler", "midpoint": "midpoint",
                  "heun": "heun2", "rk4": "rk4"}
"""odegrad's name → torchdiffeq's name of every method both have (same tableau, except rk4:
torchdiffeq's is the 3/8 rule)."""
ADAPTIVE = ("dopri5", "bosh3")
ADJOINT_BACKENDS = ("backsolve", "gq", "interp")
TOLERANCES = {"rtol": 1e-8, "atol": 1e-10}
"""Solver tolerances of adaptive cases; both libraries then agree to ~1e-6 (different error
estimators: torchdiffeq's dopri5 uses another 4th-order companion)."""
STEP = 0.05
"""Fixed step of fixed-step cases; output times lie on the grid (torchdiffeq interpolates between
grid points linearly, odegrad by cubic Hermite)."""
COMPARE = {"adaptive": 2e-5, "same_tableau": 1e-10, "rk4": 1e-6, "float32": 1e-4}
"""Comparison tolerances (relative and absolute): adaptive solves, fixed-step methods with the same
tableau in both libraries (identical arithmetic up to rounding), rk4 (classic vs 3/8 rule: both
O(h⁴) at h = ``STEP``), and float32 states."""


# Problems ------------------------------------------------------------------------------------


class Batched(nn.Module):
    """``dy/dt = tanh(y Wᵀ + b) + 0.3 sin(t) y`` on ``y: [3, 2]``."""

    def __init__(self, dtype: torch.dtype = D):
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=dtype))
        self.b = nn.Parameter(torch.tensor([0.1, -0.2], dtype=dtype))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return torch.tanh(y @ self.W.T + self.b) + 0.3 * torch.sin(t) * y


class Scalar(nn.Module):
    """``dy/dt = −a y + b sin(t)`` on a 0-dim ``y``; with a float32 state and float64 ``t`` the
    output is float64 (0-dim operands promote), which odegrad casts back as torchdiffeq does."""

    def __init__(self, dtype: torch.dtype = D):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7, dtype=dtype))
        self.b = nn.Parameter(torch.tensor(0.4, dtype=dtype))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return -self.a * y + self.b * torch.sin(t)


class Pair(nn.Module):
    """A tuple state ``(x: [2], e: 0-dim)``: ``dx/dt = tanh(W x + b)``,
    ``de/dt = −a e + 0.1 |x|² + 0.05 cos(t)``."""

    def __init__(self, dtype: torch.dtype = D):
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[-0.4, 0.9], [-0.8, -0.2]], dtype=dtype))
        self.b = nn.Parameter(torch.tensor([0.2, 0.1], dtype=dtype))
        self.a = nn.Parameter(torch.tensor(0.5, dtype=dtype))

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, e = state
        return torch.tanh(self.W @ x + self.b), -self.a * e + 0.1 * x.pow(2).sum() + 0.05 * torch.cos(t)


class Switch(nn.Module):
    """``dy/dt = ±a y + c`` with the sign flipping at ``t = 0.5``: discontinuous in t."""

    def __init__(self, dtype: torch.dtype = D):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.8, dtype=dtype))
        self.c = nn.Parameter(torch.tensor([0.3, -0.1], dtype=dtype))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        sign = torch.where(t < 0.5, 1.0, -1.0).to(y.dtype)
        return sign * self.a * y + self.c


class Rotation(nn.Module):
    """A complex state: ``dz/dt = (i ω − γ) z`` with real parameters ω, γ."""

    def __init__(self, dtype: torch.dtype = D):
        super().__init__()
        self.omega = nn.Parameter(torch.tensor([1.0, 2.0], dtype=dtype))
        self.gamma = nn.Parameter(torch.tensor(0.1, dtype=dtype))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return (1j * self.omega - self.gamma) * z


STATES: dict[str, tuple[type[nn.Module], Callable[[torch.dtype], Any]]] = {
    "batched": (Batched, lambda dtype: torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.1]], dtype=dtype)),
    "0d": (Scalar, lambda dtype: torch.tensor(1.2, dtype=dtype)),
    "tuple": (Pair, lambda dtype: (torch.tensor([0.6, -0.4], dtype=dtype), torch.tensor(0.3, dtype=dtype))),
    "switch": (Switch, lambda dtype: torch.tensor([1.0, -0.5], dtype=dtype)),
    "complex": (Rotation, lambda dtype: torch.tensor([1 + 0j, 0.5 - 1j], dtype=torch.complex128)),
}
"""Problem name → (field class, y0 builder taking the state dtype)."""


@dataclass
class OdeProblem:
    """One problem instance: fresh leaves, so each library's gradients land separately."""

    func: nn.Module
    y0: Any
    t: Tensor

    def inputs(self, wrt: tuple[str, ...]) -> list[Tensor]:
        """The tensors gradients are compared for: y0's parts, func's parameters, t."""
        parts = {"y0": list(self.y0) if isinstance(self.y0, tuple) else [self.y0],
                 "params": list(self.func.parameters()), "t": [self.t]}
        return [x for name in wrt for x in parts[name]]


def problem(state: str, *, reverse: bool = False, dtype: torch.dtype = D, time_dtype: torch.dtype = D,
            t_grad: bool = False) -> Callable[[], OdeProblem]:
    """A builder of :class:`OdeProblem` ``state`` on t from 0 to 1 (1 to 0 when ``reverse``),
    5 output times on the fixed-step grid."""
    def build() -> OdeProblem:
        field_class, make_y0 = STATES[state]
        y0 = make_y0(dtype)
        y0 = tuple(y.requires_grad_() for y in y0) if isinstance(y0, tuple) else y0.requires_grad_()
        t = torch.linspace(0.0, 1.0, 5, dtype=time_dtype)
        t = (t.flip(0) if reverse else t).requires_grad_(t_grad)
        return OdeProblem(field_class(dtype), y0, t)
    return build


# Cases ---------------------------------------------------------------------------------------


Solve = Callable[[OdeProblem], Any]


@dataclass(frozen=True)
class Case:
    """One comparison: ``ours`` and ``theirs`` solve fresh instances of ``problem``; their outputs
    and the gradients of one loss w.r.t. ``wrt`` must agree within ``tol`` (relative and absolute)
    and have the same dtypes."""

    id: str
    problem: Callable[[], OdeProblem]
    ours: Solve
    theirs: Solve
    wrt: tuple[str, ...] = ("y0", "params")
    tol: float = COMPARE["adaptive"]
    marks: tuple[Any, ...] = field(default=())


def _options(method: str, **extra: Any) -> dict[str, Any]:
    return extra if method in ADAPTIVE else {"step_size": STEP, **extra}


def _tol(method: str) -> float:
    if method in ADAPTIVE:
        return COMPARE["adaptive"]
    return COMPARE["rk4"] if method == "rk4" else COMPARE["same_tableau"]


def odegrad_odeint(method: str, gradient: str = "direct", **kwargs: Any) -> Solve:
    """``odegrad.odeint`` with ``method``, ``gradient`` and further keyword arguments."""
    def run(p: OdeProblem) -> Any:
        return odegrad.odeint(p.func, p.y0, p.t, method=method, gradient=gradient, **kwargs)
    return run


def torchdiffeq_solve(method: str, adjoint: bool = False, **kwargs: Any) -> Solve:
    """``torchdiffeq.odeint`` (or ``odeint_adjoint``) with odegrad's ``method`` name."""
    solver = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint

    def run(p: OdeProblem) -> Any:
        return solver(p.func, p.y0, p.t, method=SHARED_METHODS[method], **kwargs)
    return run


def _pair(method: str, gradient: str, *, their_adjoint: bool = True, **kwargs: Any) -> tuple[Solve, Solve]:
    """odegrad with ``gradient`` and its torchdiffeq counterpart: plain autograd for ``direct``,
    ``odeint_adjoint`` (the same continuous adjoint) for the adjoint backends unless
    ``their_adjoint`` is False (torchdiffeq's adjoint cannot run the problem)."""
    return (odegrad_odeint(method, gradient, **kwargs),
            torchdiffeq_solve(method, adjoint=their_adjoint and gradient != "direct", **kwargs))


def _method_cases() -> Iterator[Case]:
    """Every shared method, forward and reverse, batched / 0-d / tuple (with a 0-dim part) states:
    values and direct gradients w.r.t. y0 and parameters."""
    for method in SHARED_METHODS:
        for reverse in (False, True):
            for state in ("batched", "0d", "tuple"):
                kwargs = {**TOLERANCES, "options": _options(method)}
                yield Case(f"{method}-direct-{state}-{'reverse' if reverse else 'forward'}",
                           problem(state, reverse=reverse), *_pair(method, "direct", **kwargs), tol=_tol(method))


def _backend_cases() -> Iterator[Case]:
    """Adjoint backends against torchdiffeq's odeint_adjoint, adaptive and fixed-step."""
    for gradient in ADJOINT_BACKENDS:
        for method in ("dopri5", "rk4"):
            for reverse in (False, True):
                for state in ("batched", "0d", "tuple"):
                    kwargs = {**TOLERANCES, "options": {"step_size": STEP / 2} if method == "rk4" else {}}
                    yield Case(f"{method}-{gradient}-{state}-{'reverse' if reverse else 'forward'}",
                               problem(state, reverse=reverse), *_pair(method, gradient, **kwargs),
                               tol=_tol(method))


def _time_gradient_cases() -> Iterator[Case]:
    """Gradients w.r.t. t from every backend against torchdiffeq's adjoint (the same rule
    dL/dt_i = f(t_i, y_i)·dL/dy_i)."""
    for gradient in ("direct", *ADJOINT_BACKENDS):
        for method in ("dopri5", "bosh3", "rk4"):
            for reverse in (False, True):
                kwargs = {**TOLERANCES, "options": _options(method)}
                ours = odegrad_odeint(method, gradient, **kwargs)
                yield Case(f"t-grad-{method}-{gradient}-{'reverse' if reverse else 'forward'}",
                           problem("batched", reverse=reverse, t_grad=True), ours,
                           torchdiffeq_solve(method, adjoint=True, **kwargs), wrt=("y0", "params", "t"),
                           tol=_tol(method))


def _float32_cases() -> Iterator[Case]:
    """float32 y0 and parameters with float64 t: func's float64 output is cast, ys stay float32
    (also on the t.requires_grad path)."""
    for method in ("dopri5", "rk4"):
        for gradient in ("direct", "backsolve"):
            for t_grad in (False, True):
                kwargs = {"rtol": 1e-6, "atol": 1e-8, "options": _options(method)}
                yield Case(f"float32-{method}-{gradient}{'-t-grad' if t_grad else ''}",
                           problem("0d", dtype=torch.float32, t_grad=t_grad),
                           odegrad_odeint(method, gradient, **kwargs),
                           torchdiffeq_solve(method, adjoint=t_grad or gradient != "direct", **kwargs),
                           wrt=("y0", "params", "t") if t_grad else ("y0", "params"), tol=COMPARE["float32"])


ADJOINT_KWARGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "adjoint-tolerances": {"adjoint_rtol": 1e-9, "adjoint_atol": 1e-11},
    "adjoint-method": {"adjoint_method": "bosh3"},
    "seminorm": {"adjoint_options": {"norm": "seminorm"}},
    "adjoint-params": {"adjoint_params": "all"},
}
"""torchdiffeq's odeint_adjoint keyword arguments, passed unchanged to both libraries
(``"all"``: the func's parameters, given explicitly)."""


def _adjoint_call(solver: Callable[..., Any], kwargs: dict[str, Any], **extra: Any) -> Solve:
    def run(p: OdeProblem) -> Any:
        given = dict(kwargs)
        if given.get("adjoint_params") == "all":
            given["adjoint_params"] = tuple(p.func.parameters())
        return solver(p.func, p.y0, p.t, **TOLERANCES, **given, **extra)
    return run


def _odeint_adjoint_cases() -> Iterator[Case]:
    """``odegrad.odeint_adjoint`` against ``torchdiffeq.odeint_adjoint`` with the same keywords,
    gradients w.r.t. y0, parameters and t; and its ``gradient=`` choices (the alias ``adjoint``,
    gq, interp) against torchdiffeq's adjoint."""
    for state in ("batched", "tuple"):
        for name, kwargs in ADJOINT_KWARGS.items():
            yield Case(f"odeint_adjoint-{name}-{state}", problem(state, t_grad=True),
                       _adjoint_call(odegrad.odeint_adjoint, kwargs),
                       _adjoint_call(torchdiffeq.odeint_adjoint, kwargs), wrt=("y0", "params", "t"))
        for gradient in ("adjoint", "gq", "interp"):
            yield Case(f"odeint_adjoint-gradient={gradient}-{state}", problem(state, t_grad=True),
                       _adjoint_call(odegrad.odeint_adjoint, {}, gradient=gradient),
                       _adjoint_call(torchdiffeq.odeint_adjoint, {}), wrt=("y0", "params", "t"))


def _grid_to_21(func: Any, y0: Tensor, t: Tensor) -> Tensor:
    """A ``grid_constructor``: 21 equal steps from t[0] to t[-1] (either direction)."""
    return torch.linspace(float(t[0]), float(t[-1]), 21, dtype=t.dtype)


def _option_cases() -> Iterator[Case]:
    """Options torchdiffeq accepts: perturb, grid_constructor, interp (linear), jump_t, step_t,
    per-element and tuple tolerances."""
    for method in ("euler", "midpoint", "heun", "rk4"):
        for reverse in (False, True):
            direction = "reverse" if reverse else "forward"
            kwargs = {"options": {"step_size": STEP, "perturb": True}}
            yield Case(f"perturb-{method}-{direction}", problem("switch", reverse=reverse),
                       *_pair(method, "direct", **kwargs), tol=_tol(method))
            kwargs = {"options": {"grid_constructor": _grid_to_21}}
            yield Case(f"grid_constructor-{method}-{direction}", problem("batched", reverse=reverse),
                       *_pair(method, "direct", **kwargs), tol=_tol(method))
            kwargs = {"options": {"step_size": 0.1, "interp": "linear"}}  # outputs between grid points
            yield Case(f"interp-linear-{method}-{direction}", problem("batched", reverse=reverse),
                       *_pair(method, "direct", **kwargs),  # rk4 rules O(h⁴) apart at h = 0.1
                       tol=COMPARE["adaptive"] if method == "rk4" else _tol(method))
    adapter = {"options": {"step_size": STEP, "perturb": True}}  # passed on by the torchdiffeq adapter
    yield Case("perturb-torchdiffeq:euler", problem("switch"), odegrad_odeint("torchdiffeq:euler", **adapter),
               torchdiffeq_solve("euler", **adapter), tol=COMPARE["same_tableau"])
    tight = {"rtol": 1e-10, "atol": 1e-12}  # torchdiffeq's bosh3 misses by 6e-6 at rtol 1e-8 here
    for method in ADAPTIVE:
        for reverse in (False, True):
            direction = "reverse" if reverse else "forward"
            for gradient in ("direct", "backsolve"):
                ours = odegrad_odeint(method, gradient, **tight, options={"jump_t": [0.5]})
                theirs = torchdiffeq_solve(method, adjoint=gradient != "direct", **tight,
                                           options={"jump_t": torch.tensor([0.5], dtype=D)})
                yield Case(f"jump_t-{method}-{gradient}-{direction}", problem("switch", reverse=reverse),
                           ours, theirs)
            ours = odegrad_odeint(method, **TOLERANCES, options={"step_t": [0.3, 0.6]})
            theirs = torchdiffeq_solve(method, **TOLERANCES, options={"step_t": torch.tensor([0.3, 0.6], dtype=D)})
            yield Case(f"step_t-{method}-{direction}", problem("batched", reverse=reverse), ours, theirs)
    per_element = {"rtol": torch.tensor([1e-8, 1e-6], dtype=D), "atol": torch.full((3, 2), 1e-10, dtype=D)}
    yield Case("tensor-tolerances", problem("batched"), *_pair("dopri5", "direct", **per_element))
    # torchdiffeq's adjoint takes a tensor tolerance for a tuple one, so the reference is autograd
    yield Case("tensor-tolerances-backsolve", problem("batched"),
               *_pair("dopri5", "backsolve", their_adjoint=False, **per_element))
    tupled = {"rtol": (1e-8, 1e-7), "atol": (torch.tensor([1e-10, 1e-9], dtype=D), 1e-10)}
    yield Case("tuple-tolerances", problem("tuple"), *_pair("dopri5", "direct", **tupled))


def _complex_cases() -> Iterator[Case]:
    """Complex states (torchdiffeq integrates them natively, odegrad as their real views); the
    reference gradient is autograd (torchdiffeq's adjoint fails on complex states)."""
    for method in ("dopri5", "rk4"):
        for gradient in ("direct", "backsolve"):
            for reverse in (False, True):
                kwargs = {**TOLERANCES, "options": _options(method)}
                yield Case(f"complex-{method}-{gradient}-{'reverse' if reverse else 'forward'}",
                           problem("complex", reverse=reverse),
                           *_pair(method, gradient, their_adjoint=False, **kwargs),
                           # backsolve's continuous adjoint vs autograd's discrete gradient: O(h⁴) apart
                           tol=_tol(method) if gradient == "direct" else COMPARE["adaptive"])


def _event_solve(library: Any, method: str, adjoint: bool, reverse: bool) -> Solve:
    """``library.odeint_event`` from t[0] until the 0-dim state crosses 0.9 (forward) or 1.5
    (backwards in time), through the library's odeint or odeint_adjoint."""
    interface = library.odeint_adjoint if adjoint else library.odeint
    options = _options(method, interp="cubic") if method not in ADAPTIVE else None

    def run(p: OdeProblem) -> Any:
        threshold = 1.5 if reverse else 0.9
        return library.odeint_event(p.func, p.y0, p.t[0], event_fn=lambda t, y: y - threshold,
                                    reverse_time=reverse, odeint_interface=interface, method=method,
                                    options=options, **TOLERANCES)
    return run


def _event_cases() -> Iterator[Case]:
    """torchdiffeq's event spelling (odeint_event, through odeint and odeint_adjoint): the event
    time and state and their gradients w.r.t. y0 and parameters (implicit function theorem)."""
    for method in ("dopri5", "rk4"):
        for adjoint in (False, True):
            for reverse in (False, True):
                yield Case(f"event-{method}-{'adjoint' if adjoint else 'direct'}-{'reverse' if reverse else 'forward'}",
                           problem("0d", reverse=reverse), _event_solve(odegrad, method, adjoint, reverse),
                           _event_solve(torchdiffeq, method, adjoint, reverse), tol=_tol(method))


CASES: list[Case] = [*_method_cases(), *_backend_cases(), *_time_gradient_cases(), *_float32_cases(),
                     *_odeint_adjoint_cases(), *_option_cases(), *_complex_cases(),
                     *_event_cases()]
"""Every compared case (``len(CASES)`` is the number reported for issue 14)."""


# Running and comparing -------------------------------------------------------------------------


def _leaves(output: Any) -> list[Tensor]:
    """The tensors of an output (a tensor, or nested tuples of tensors)."""
    if isinstance(output, Tensor):
        return [output]
    return [leaf for part in output for leaf in _leaves(part)]


def _real(x: Tensor) -> Tensor:
    return torch.view_as_real(x) if x.is_complex() else x


LOSS = RandomProjectionLoss(seed=14)


def run(case: Case, solve: Solve) -> tuple[list[Tensor], list[Tensor]]:
    """Outputs of ``solve`` on a fresh problem and the gradients of one loss of them w.r.t. the
    case's inputs."""
    instance = case.problem()
    outputs = _leaves(solve(instance))
    loss = LOSS(tuple(_real(o).to(D) for o in outputs))
    grads = torch.autograd.grad(loss, instance.inputs(case.wrt), allow_unused=True)
    return [o.detach() for o in outputs], list(grads)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_matches_torchdiffeq(case: Case):
    ours, our_grads = run(case, case.ours)
    theirs, their_grads = run(case, case.theirs)
    assert len(ours) == len(theirs) and len(our_grads) == len(their_grads)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=case.tol, atol=case.tol)
    for i, (a, b) in enumerate(zip(our_grads, their_grads)):
        assert a is not None and b is not None, f"gradient {i} missing"
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=case.tol, atol=case.tol, msg=lambda m, i=i: f"gradient {i}: {m}")


def test_case_count_and_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES) >= 150


# What odegrad refuses ----------------------------------------------------------------------------


def _solve(**kwargs: Any) -> Any:
    p = problem("batched")()
    return odegrad.odeint(p.func, p.y0, p.t, **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"rtol": torch.ones(4, dtype=D)}, InvalidInput, r"rtol shape"),
    ({"atol": torch.tensor([1e-9, -1.0], dtype=D)}, InvalidInput, r"finite non-negative"),
    ({"rtol": torch.zeros(2, dtype=D), "atol": torch.tensor([1e-9, 0.0], dtype=D)}, InvalidInput, "rtol/atol"),
    ({"rtol": torch.full((2,), 1e-7, dtype=D, requires_grad=True)}, InvalidInput, "without gradient"),
    ({"method": "rk4", "options": {"perturb": 1}}, InvalidInput, r"options\['perturb'\]"),
    ({"method": "rk4", "options": {"grid_constructor": _grid_to_21, "step_size": 0.1}}, InvalidInput,
     "only one of grid_constructor"),
    ({"method": "rk4", "options": {"grid_constructor": "linspace"}}, InvalidInput, "a callable"),
    ({"method": "rk4", "options": {"grid_constructor": lambda f, y, t: t[:1]}}, InvalidInput, "grid"),
    ({"options": {"perturb": True}}, UnsupportedCombination, r"options\['perturb'\]"),
    ({"method": "rk4", "options": {"step_t": [0.5]}}, UnsupportedCombination, r"options\['step_t'\]"),
    ({"options": {"step_t": "0.5"}}, InvalidInput, r"options\['step_t'\]"),
    ({"gradient": "adjoin"}, UnknownName, "adjoint"),
])
def test_bad_torchdiffeq_style_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str):
    with pytest.raises(error, match=match):
        _solve(**kwargs)


def test_tuple_tolerances_need_one_per_part():
    p = problem("tuple")()
    with pytest.raises(InvalidInput, match="2, one per state"):
        odegrad.odeint(p.func, p.y0, p.t, rtol=(1e-7, 1e-7, 1e-7))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"gradient": "direct"}, InvalidInput, "adjoint method"),
    ({"adjoint_options": {"norm": lambda x: x.abs().max()}}, InvalidInput, r"adjoint_options\['norm'\]"),
    ({"adjoint_options": {"step_size": 0.1}}, UnsupportedCombination, r"adjoint_options\['step_size'\]"),
    ({"adjoint_options": ["seminorm"]}, InvalidInput, "adjoint_options"),
    ({"adjoint_rtol": -1.0}, InvalidInput, "rtol"),
])
def test_bad_odeint_adjoint_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str):
    p = problem("batched")()
    with pytest.raises(error, match=match):
        odegrad.odeint_adjoint(p.func, p.y0, p.t, **kwargs)


def test_func_output_that_cannot_be_cast_is_refused():
    p = problem("batched")()
    with pytest.raises(InvalidInput, match="func output dtype"):
        odegrad.odeint(lambda t, y: (y * 0).to(torch.complex128), p.y0, p.t)


def test_adjoint_alias_builds_backsolve_and_is_not_a_second_backend():
    assert isinstance(odegrad.get_backend("adjoint"), odegrad.gradients.Backsolve)
    assert "adjoint" not in odegrad.backend_names()
    assert not any(gradient == "adjoint" for _, gradient in registered_pairs())


def test_perturb_evaluates_inside_each_step():
    """With perturb=True, func never sees a grid time itself: the first stage of a step is one
    representable time after its start, the last one before its end (torchdiffeq's Perturb)."""
    seen: list[float] = []

    def field(t: Tensor, y: Tensor) -> Tensor:
        seen.append(float(t))
        return -y

    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    odegrad.odeint(field, torch.ones(1, dtype=D), t, method="euler", options={"perturb": True})
    assert set(seen) == {math.nextafter(0.0, 1), math.nextafter(0.5, 0), math.nextafter(0.5, 1),
                         math.nextafter(1.0, 0)}


def test_jump_t_sees_func_from_inside_each_step():
    """At a jump the step that ends there evaluates func just before it, the next step starts
    with func just after it; y' = ±y switching at 0.5 is integrated to its exact value."""
    switch = lambda t, y: torch.where(t < 0.5, 1.0, -1.0).to(y.dtype) * y  # noqa: E731
    ys = odegrad.odeint(switch, torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D), method="bosh3",
                        rtol=1e-10, atol=1e-12, options={"jump_t": [0.5]})
    assert abs(float(ys[-1]) - 1.0) < 1e-8


def test_field_independent_of_y_has_zero_vjp_for_every_adjoint_backend():
    """Pure quadrature y' = g(t) (issue 14, item 3): y(1) = y0 + ∫g, dL/dy0 = dL/dy(1)."""
    for gradient in ADJOINT_BACKENDS:
        y0 = torch.zeros(2, dtype=D, requires_grad=True)
        ys = odegrad.odeint(lambda t, y: torch.cos(t).expand(2), y0, torch.tensor([0.0, 1.0], dtype=D),
                            gradient=gradient)
        ys[-1].sum().backward()
        assert torch.allclose(ys[-1].detach(), torch.full((2,), math.sin(1.0), dtype=D))
        assert torch.equal(y0.grad, torch.ones(2, dtype=D))


def test_time_gradient_path_keeps_float32():
    """The t.requires_grad path shifts y0 by −shift·f(t0, y0) in y0's dtype (issue 14, item 2)."""
    p = problem("0d", dtype=torch.float32, t_grad=True)()
    for gradient in ("direct", *ADJOINT_BACKENDS):
        assert odegrad.odeint(p.func, p.y0, p.t, gradient=gradient).dtype == torch.float32
