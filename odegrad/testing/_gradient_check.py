"""``check_gradients``: run a model through several (method, gradient) pairs in float64 and report
how far their gradients are from each other and from finite differences.

A vector field with kinks (ReLU, abs, max, clamp, ...) is not differentiable where a trajectory
crosses one; there integrators and backends legitimately disagree beyond the error model, which
assumes a smooth field. The check finds such operations by evaluating ``func`` once under a
:class:`~torch.overrides.TorchFunctionMode` (so functional calls are seen as well as layers) and
says so beside the verdict. Operations inside TorchScript, compiled regions or C++ extensions
are not seen.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .._checks import check_choice, check_int, check_non_negative, check_positive
from ..errors import InvalidInput
from ..gradients import backend_names
from ..solvers import get_solver
from ._convergence import ConvergedReference, converged_gradients, run_converging
from ._runs import (
    GROUP_FLOOR,
    FiniteDifferences,
    Loss,
    PairRun,
    RandomProjectionLoss,
    State,
    finite_differences,
    reference_error,
)
from ._tolerances import Settings, accurate_settings, expected_error

# torch functions / Tensor methods with a kink or a jump (named as ``func.__name__`` without
# underscores, so ``Tensor.__abs__`` and ``relu_`` count too).
NONSMOOTH_OPS = frozenset({
    "relu", "relu6", "leaky_relu", "hardtanh", "hardswish", "hardsigmoid", "hardshrink", "softshrink",
    "threshold", "prelu", "rrelu", "selu", "abs", "absolute", "clamp", "clip", "clamp_min", "clamp_max",
    "max", "min", "maximum", "minimum", "fmax", "fmin", "amax", "amin", "sign", "sgn", "heaviside",
    "floor", "ceil", "round", "trunc", "frac", "fmod", "remainder", "where", "max_pool1d", "max_pool2d",
    "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "sort", "topk",
})
# Kinked unless alpha == 1 (then only the second derivative jumps).
_KINKED_UNLESS_ALPHA_ONE = frozenset({"elu", "celu"})
_DTYPES = (torch.float64, torch.float32)
_NOTE_WIDTH = 70
_SMOOTH_ALTERNATIVES = "Softplus with a large beta, SiLU, GELU or Tanh"
# The converged reference against central differences (float64, eps = 1e-5): ε² truncation and
# round-off/ε are each ≲ 1e-10 of a group; a wrong reference is off by the error it carries.
_FD_TOLERANCE = 1e-7


@dataclass
class Comparison:
    """A pair's gradient error against the converged reference (``other`` = ``"converged
    reference"``), or the reference's against finite differences (``first`` = ``"converged
    reference"``, ``other`` = ``"finite differences"``).

    Attributes:
        first, other: the labels of the two compared computations.
        disagreement: the largest relative error of ``first``, per gradient group relative to
            the reference's size (:func:`~odegrad.testing.reference_error`).
        where: the gradient group where it occurs.
        tolerance: the error-model bound it is checked against.
    """

    first: str
    other: str
    disagreement: float
    where: str
    tolerance: float

    @property
    def passed(self) -> bool:
        """The disagreement is within the tolerance."""
        return self.disagreement <= self.tolerance


@dataclass
class GradientReport:
    """Result of :func:`check_gradients`.

    Attributes:
        runs: one :class:`PairRun` per (method, gradient) pair (with NFE and seconds; for
            fixed-step methods the Richardson value of two nested grids, costs summed).
        comparisons: every pair against the converged reference, then the reference against
            finite differences; each with its max relative error and tolerance.
        scale: the rate scale Λ (estimated ‖∂f/∂y‖) used by the error model.
        reference: the converged reference gradient (None when no pair ran).
        fd: the finite-difference check of the reference (None when it was not computed).
        notes: lines printed under the tables (precision, settings, finite-difference setup,
            and what to do about a non-smooth func).
        nonsmooth: the non-smooth operations ``func`` ran, e.g. ``"relu in net.1 (ReLU)"``
            (see :func:`find_nonsmooth`); empty for a smooth func.
    """

    runs: list[PairRun]
    comparisons: list[Comparison]
    scale: float
    reference: ConvergedReference | None = None
    fd: FiniteDifferences | None = None
    notes: list[str] = field(default_factory=list)
    nonsmooth: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No pair errored, at least one pair ran, and every comparison is within tolerance."""
        ran = [r for r in self.runs if r.status == "ok"]
        return bool(ran) and all(r.status != "error" for r in self.runs) and all(
            c.passed for c in self.comparisons)

    @property
    def worst(self) -> Comparison | None:
        """The comparison closest to (or furthest past) its tolerance."""
        return max(self.comparisons, key=lambda c: c.disagreement / c.tolerance, default=None)

    def table(self) -> str:
        """The report as plain-text tables (runs, then comparisons, then the verdict)."""
        lines = [f"{'pair':<28} {'status':<6} {'nfe fwd':>8} {'nfe bwd':>8} {'time [s]':>9}  note"]
        for r in self.runs:
            row = (f"{r.label:<28} {r.status:<6} {r.nfe_forward:>8} {r.nfe_backward:>8} "
                   f"{r.seconds:>9.4f}  ")
            note = textwrap.wrap(r.message, _NOTE_WIDTH, break_long_words=False, break_on_hyphens=False)
            lines.append((row + (note[0] if note else "")).rstrip())
            lines.extend(" " * len(row) + more for more in note[1:])
        lines.append("")
        lines.append(f"{'pair':<28} {'against':<28} {'max rel diff':>12} {'tolerance':>10} {'worst in':<10} ok")
        for c in self.comparisons:
            lines.append(f"{c.first:<28} {c.other:<28} {c.disagreement:>12.3e} {c.tolerance:>10.1e} "
                         f"{c.where:<10} {'yes' if c.passed else 'NO'}")
        lines.extend(self.notes)
        worst = self.worst
        verdict = "PASS" if self.passed else "FAIL"
        if worst is not None:
            verdict += (f" (worst: {worst.first} vs {worst.other}: {worst.disagreement:.2e} "
                        f"at tolerance {worst.tolerance:.1e})")
        if self.nonsmooth:
            verdict += "; func is non-smooth, see the note above"
        lines.append(verdict)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def estimate_scale(func: Callable, y0: State, t: Tensor, iterations: int = 8) -> float:
    """Rate scale Λ: ``func.rate_scale`` when the field declares it, else ‖∂f/∂y‖₂ at (t0, y0)
    estimated by power iteration on JᵀJ (vector–Jacobian and Jacobian–vector products)."""
    declared = getattr(func, "rate_scale", None)
    if isinstance(declared, (int, float)) and math.isfinite(declared):
        return float(declared)
    flat = y0 if isinstance(y0, Tensor) else torch.cat([y.reshape(-1) for y in y0])
    shapes = None if isinstance(y0, Tensor) else [y.shape for y in y0]

    def f(y: Tensor) -> Tensor:
        if shapes is None:
            return func(t[0], y)
        parts, offset = [], 0
        for shape in shapes:
            n = math.prod(shape)
            parts.append(y[offset:offset + n].reshape(shape))
            offset += n
        return torch.cat([o.reshape(-1) for o in func(t[0], tuple(parts))])

    v = torch.randn(flat.shape, generator=torch.Generator().manual_seed(0), dtype=flat.dtype)
    sigma = 0.0
    for _ in range(iterations):
        v = v / v.norm().clamp_min(1e-300)
        _, jv = torch.func.jvp(f, (flat.detach(),), (v,))
        _, vjp = torch.func.vjp(f, flat.detach())
        v = vjp(jv)[0].detach()
        sigma = math.sqrt(float(v.norm()))
    # A local estimate of the batch-block-diagonal Jacobian's norm; the batch repeats it.
    return sigma


class _NonsmoothRecorder(TorchFunctionMode):
    """Records the non-smooth torch operations run under it, with the module running each."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, None] = {}  # ordered set
        self.modules: list[str] = []

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "").strip("_")
        alpha = kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)
        if name in NONSMOOTH_OPS or (name in _KINKED_UNLESS_ALPHA_ONE and alpha != 1.0):
            self.found.setdefault(f"{name} in {self.modules[-1]}" if self.modules else name)
        return func(*args, **kwargs)


def find_nonsmooth(func: Callable, t0: Tensor, y0: State) -> list[str]:
    """The non-smooth operations (:data:`NONSMOOTH_OPS`, and ELU/CELU with alpha ≠ 1) that one
    evaluation ``func(t0, y0)`` runs, each with the layer running it when ``func`` is an
    ``nn.Module`` (``"relu in net.1 (ReLU)"``); functional calls are found too. Operations inside
    TorchScript, compiled regions or C++ extensions are not seen."""
    recorder = _NonsmoothRecorder()

    def enter(name: str, module: nn.Module, args: Any) -> None:
        recorder.modules.append(f"{name} ({type(module).__name__})" if name else type(module).__name__)

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        recorder.modules.pop()

    handles = []
    if isinstance(func, nn.Module):
        for name, module in func.named_modules():
            handles.append(module.register_forward_pre_hook(functools.partial(enter, name)))
            handles.append(module.register_forward_hook(leave))
    try:
        with recorder:  # with autograd on: a field may differentiate inside (energy-based fields)
            func(t0, y0)
    finally:
        for handle in handles:
            handle.remove()
    return list(recorder.found)


def _passing_tolerance(comparisons: Sequence[Comparison]) -> float:
    """The largest disagreement, rounded up to one significant digit: a ``tolerance`` at which
    every comparison would pass."""
    worst = max((c.disagreement for c in comparisons), default=0.0)
    if not 0 < worst < math.inf:
        return worst
    unit = 10.0 ** math.floor(math.log10(worst))
    return math.ceil(worst / unit) * unit


def _nonsmooth_note(nonsmooth: Sequence[str], comparisons: Sequence[Comparison]) -> str:
    """What a non-smooth func means for the verdict and what would pass."""
    advice = f"use a smooth activation ({_SMOOTH_ALTERNATIVES})"
    if any(not c.passed for c in comparisons):
        advice += (f", or accept the kinks' effect with tolerance={_passing_tolerance(comparisons):.0e} "
                   "(--tolerance), the largest disagreement measured here")
    return (f"non-smooth func: {', '.join(nonsmooth)}. Where a trajectory crosses a kink the field is not "
            "differentiable: integrators, gradient backends and finite differences each resolve it "
            "differently and may disagree beyond the error model, which assumes a smooth field. To check "
            f"the rest, {advice}.")


def _dtype_roundoff(dtype: torch.dtype) -> float:
    """Round-off beyond float64's (:data:`ROUNDOFF`, already in the error model): 10⁴ operations'
    worth of the dtype's machine epsilon, the accounting ROUNDOFF uses for float64."""
    return 0.0 if dtype == torch.float64 else 1e4 * torch.finfo(dtype).eps


def _user_settings(method: str, base: Settings, rtol: float | None, atol: float | None,
                   step_size: float | None) -> Settings:
    """``base`` with the user's rtol/atol (adaptive methods) or step size (fixed-step ones)."""
    if get_solver(method).error_estimate:
        return dataclasses.replace(base, rtol=base.rtol if rtol is None else rtol,
                                   atol=base.atol if atol is None else atol)
    if step_size is None:
        return base
    return dataclasses.replace(base, options={**base.options, "step_size": step_size})


def _converted(func: Callable, y0: State, t: Tensor, dtype: torch.dtype) -> tuple[Callable, State, Tensor]:
    """``func`` (a copy, for modules), y0 and t in ``dtype``, checked."""
    if isinstance(func, nn.Module):
        func = copy.deepcopy(func).to(dtype)
    if isinstance(y0, Tensor):
        y0 = y0.detach().to(dtype)
    elif isinstance(y0, (tuple, list)) and all(isinstance(y, Tensor) for y in y0):
        y0 = tuple(y.detach().to(dtype) for y in y0)
    else:
        raise InvalidInput("y0", type(y0).__name__, "a Tensor or a tuple of Tensors")
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t)
    if t.dim() != 1 or t.numel() < 2:
        raise InvalidInput("t", t, "a 1-D tensor of at least two strictly monotone times")
    return func, y0, t.detach().to(dtype)


def check_gradients(func: Callable, y0: State, t: Tensor, *,
                    methods: Sequence[str] = ("dopri5",),
                    gradients: Sequence[str] | None = None,
                    loss: Loss | None = None,
                    params: Sequence[Tensor] | None = None,
                    settings: dict[str, Settings] | None = None,
                    rtol: float | None = None,
                    atol: float | None = None,
                    step_size: float | None = None,
                    dtype: torch.dtype = torch.float64,
                    tolerance: float | None = None,
                    fd_directions: int = 3,
                    seed: int = 0) -> GradientReport:
    """Check that every (method, gradient) pair computes correct gradients for a model.

    The model is copied to ``dtype`` (``nn.Module`` funcs; plain callables must accept it).
    Each pair solves and backpropagates ``loss(ys)`` to y0, the parameters and t, and is held to
    the error model against a *converged reference* that no pair under test computed
    (:func:`odegrad.testing.converged_gradients`: RK4 backpropagation refined until converged,
    in float64 on a float64 copy of a module func whatever ``dtype`` is), per gradient group
    relative to the reference's size. Fixed-step methods run on nested grids of steps ≤ h and
    ≤ h/2 and their Richardson value is held to the model at order p + 1 — a gradient whose error
    does not shrink at the method's order fails whatever its size. The reference itself is
    checked against central finite differences along each of its gradient groups (and
    ``fd_directions`` random directions, as ``torch.autograd.gradcheck``'s fast mode). A non-smooth func (ReLU,
    abs, max, ... see :func:`find_nonsmooth`) is reported in ``report.nonsmooth`` and a note that
    says what tolerance or activation would pass.

    Args:
        func: vector field ``func(t, y)``; y0: ``Tensor[*shape]`` or tuple; t: ``Tensor[T]``, T ≥ 2.
        methods: integrator names (default ``("dopri5",)``).
        gradients: backend names (default: every registered backend).
        loss: ``loss(ys) -> scalar`` (default :class:`RandomProjectionLoss`).
        params: tensors to differentiate (default: ``func.parameters()`` for modules); for a
            plain callable, the leaf tensors (in ``dtype``) it closes over.
        settings: per-method :class:`Settings` (default :func:`accurate_settings`, with ``rtol``,
            ``atol`` and ``step_size`` applied); an entry here is used as given.
        rtol, atol: tolerances of the adaptive methods instead of the accurate defaults.
        step_size: step of the fixed-step methods instead of the accurate default.
        dtype: precision of the checked runs, ``torch.float64`` (default) or ``torch.float32``;
            float32 adds 10⁴·eps(float32) of round-off to every tolerance.
        tolerance: relative tolerance of every pair's comparison with the reference (default:
            the error model of :func:`odegrad.testing.expected_error` for each pair).
        fd_directions: random directions of the finite-difference check, besides one along
            each gradient group (0: skip the check).
        seed: seeds the default loss and the FD directions.

    Returns:
        A :class:`GradientReport`; ``report.passed`` is the verdict, ``report.table()`` the text.
    """
    if isinstance(methods, str) or not methods:
        raise InvalidInput("methods", methods, "a non-empty sequence of method names")
    gradients = backend_names() if gradients is None else gradients
    if isinstance(gradients, str) or not gradients:
        raise InvalidInput("gradients", gradients, "a non-empty sequence of gradient backend names")
    for name, value in (("tolerance", tolerance), ("rtol", rtol), ("step_size", step_size)):
        if value is not None:
            check_positive(name, value)
    if atol is not None:
        check_non_negative("atol", atol)
    check_choice("dtype", dtype, _DTYPES)
    check_int("fd_directions", fd_directions, low=0)
    for method in methods:
        get_solver(method)
    original = func
    func, y0, t = _converted(original, y0, t, dtype)
    if params is not None:
        params = list(params)
        for i, p in enumerate(params):
            if not (isinstance(p, Tensor) and p.dtype == dtype and p.requires_grad):
                raise InvalidInput(f"params[{i}]", p, f"a {dtype} tensor with requires_grad=True that func uses "
                                   f"(only nn.Module funcs are converted to {dtype} automatically)")
    loss = RandomProjectionLoss(seed) if loss is None else loss
    span = abs(float(t[-1] - t[0]))
    scale = estimate_scale(func, y0, t)
    nonsmooth = find_nonsmooth(func, t[0], y0)
    settings = dict(settings or {})
    for method in methods:
        settings.setdefault(method, _user_settings(method, accurate_settings(method, span, scale),
                                                   rtol, atol, step_size))

    runs = [run_converging(func, y0, t, m, g, settings=settings[m], loss=loss, params=params, catch=True)
            for m in methods for g in gradients]
    ok = [r for r in runs if r.status == "ok"]
    reference_problem = (func, y0, t)
    if dtype != torch.float64 and isinstance(original, nn.Module) and params is None:
        reference_problem = _converted(original, y0, t, torch.float64)
    reference = converged_gradients(*reference_problem, loss, params=params) if ok else None
    comparisons = []
    for r in ok:
        tol = tolerance if tolerance is not None else (
            expected_error(r.method, r.extrapolated or settings[r.method], span, scale, steps=2 * r.steps,
                           extrapolated=r.extrapolated is not None)
            + _dtype_roundoff(dtype) + reference.change)
        error, where = reference_error(r.grads, reference.grads)
        comparisons.append(Comparison(r.label, "converged reference", error, where, tol))
    fd = None
    if fd_directions and reference is not None:
        fd = finite_differences(*reference_problem, loss, params=params, n_directions=fd_directions, seed=seed,
                                eps=max(1e-5, torch.finfo(reference_problem[2].dtype).eps ** (1 / 3)),
                                along=reference.grads)
        floor = GROUP_FLOOR * max(float(g.norm()) for g in reference.grads.values())
        comparisons.append(Comparison("converged reference", "finite differences",
                                      fd.error_of(reference.grads, floor=floor), "per group",
                                      _FD_TOLERANCE + reference.change))
    notes = [f"{str(dtype).removeprefix('torch.')}; rate scale {scale:.3g}; span {span:.3g}; settings: "
             + "; ".join(f"{m}: {settings[m].describe()}" for m in methods)]
    if reference is not None:
        notes.append(f"converged reference: RK4 backpropagation, Richardson value of {reference.steps // 2} and "
                     f"{reference.steps} steps (last refinement changed it by {reference.change:.1e})")
    if any(r.extrapolated is not None for r in ok):
        notes.append("fixed-step pairs: Richardson value of steps <= h and <= h/2 on nested grids, held to the "
                     "error model at order p+1: an error that does not shrink at the method's order fails")
    if fd is not None:
        notes.append(f"finite differences: {len(fd.directions) - fd_directions} directions along the reference's "
                     f"gradient groups and {fd_directions} random ones, eps={fd.eps:g}, RK4 reference on "
                     f"{fd.steps} steps")
    if nonsmooth:
        notes.extend(textwrap.wrap(_nonsmooth_note(nonsmooth, comparisons), 100, break_long_words=False,
                                   break_on_hyphens=False))
    return GradientReport(runs=runs, comparisons=comparisons, scale=scale, reference=reference, fd=fd, notes=notes,
                          nonsmooth=nonsmooth)
