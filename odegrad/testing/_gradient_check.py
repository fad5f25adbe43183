"""``check_gradients``: run a model through several (method, gradient) pairs in float64 and report
how far their gradients are from each other and from finite differences."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._checks import check_int, check_positive
from ..errors import InvalidInput
from ..gradients import backend_names
from ..solvers import get_solver
from ._runs import (
    FiniteDifferences,
    Loss,
    PairRun,
    RandomProjectionLoss,
    State,
    finite_differences,
    relative_disagreement,
    run_pair,
)
from ._tolerances import ROUNDOFF, Settings, accurate_settings, expected_error


@dataclass
class Comparison:
    """Disagreement between two pairs (``other`` = ``"finite differences"`` for the FD check).

    Attributes:
        first, other: the labels of the two compared runs.
        disagreement: their largest relative gradient difference.
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
        runs: one :class:`PairRun` per (method, gradient) pair (with NFE and seconds).
        comparisons: every pair against every other pair, then every pair against finite
            differences; each with its max relative disagreement and tolerance.
        scale: the rate scale Λ (estimated ‖∂f/∂y‖) used by the error model.
        fd: the finite-difference reference (None when it was not computed).
        notes: lines printed under the tables (precision, settings, finite-difference setup).
    """

    runs: list[PairRun]
    comparisons: list[Comparison]
    scale: float
    fd: FiniteDifferences | None = None
    notes: list[str] = field(default_factory=list)

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
            lines.append(f"{r.label:<28} {r.status:<6} {r.nfe_forward:>8} {r.nfe_backward:>8} "
                         f"{r.seconds:>9.4f}  {r.message[:70]}")
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


def _to_float64(func: Callable, y0: State, t: Tensor) -> tuple[Callable, State, Tensor]:
    if isinstance(func, nn.Module):
        func = copy.deepcopy(func).to(torch.float64)
    if isinstance(y0, Tensor):
        y0 = y0.detach().to(torch.float64)
    elif isinstance(y0, (tuple, list)) and all(isinstance(y, Tensor) for y in y0):
        y0 = tuple(y.detach().to(torch.float64) for y in y0)
    else:
        raise InvalidInput("y0", type(y0).__name__, "a Tensor or a tuple of Tensors")
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t)
    if t.dim() != 1 or t.numel() < 2:
        raise InvalidInput("t", t, "a 1-D tensor of at least two strictly monotone times")
    return func, y0, t.detach().to(torch.float64)


def check_gradients(func: Callable, y0: State, t: Tensor, *,
                    methods: Sequence[str] = ("dopri5",),
                    gradients: Sequence[str] | None = None,
                    loss: Loss | None = None,
                    params: Sequence[Tensor] | None = None,
                    settings: dict[str, Settings] | None = None,
                    tolerance: float | None = None,
                    fd_directions: int = 3,
                    seed: int = 0) -> GradientReport:
    """Check that every (method, gradient) pair computes the same, correct gradients for a model.

    The model is copied to float64 (``nn.Module`` funcs; plain callables must accept float64).
    Each pair solves and backpropagates ``loss(ys)`` to y0, the parameters and t. Every pair is
    compared with every other pair and with central finite differences of an RK4 reference solve
    refined until converged (directional, like ``torch.autograd.gradcheck``'s fast mode).

    Args:
        func: vector field ``func(t, y)``; y0: ``Tensor[*shape]`` or tuple; t: ``Tensor[T]``, T ≥ 2.
        methods: integrator names (default ``("dopri5",)``).
        gradients: backend names (default: every registered backend).
        loss: ``loss(ys) -> scalar`` (default :class:`RandomProjectionLoss`).
        params: tensors to differentiate (default: ``func.parameters()`` for modules); for a
            plain callable, the float64 leaf tensors it closes over.
        settings: per-method :class:`Settings` (default :func:`accurate_settings`).
        tolerance: relative tolerance of every comparison (default: the error model of
            :mod:`odegrad.testing._tolerances` for each pair, summed for pair-vs-pair).
        fd_directions: number of random directions of the finite-difference check (0: skip it).
        seed: seeds the default loss and the FD directions.

    Returns:
        A :class:`GradientReport`; ``report.passed`` is the verdict, ``report.table()`` the text.
    """
    if isinstance(methods, str) or not methods:
        raise InvalidInput("methods", methods, "a non-empty sequence of method names")
    gradients = backend_names() if gradients is None else gradients
    if isinstance(gradients, str) or not gradients:
        raise InvalidInput("gradients", gradients, "a non-empty sequence of gradient backend names")
    if tolerance is not None:
        check_positive("tolerance", tolerance)
    check_int("fd_directions", fd_directions, low=0)
    for method in methods:
        get_solver(method)
    func, y0, t = _to_float64(func, y0, t)
    if params is not None:
        params = list(params)
        for i, p in enumerate(params):
            if not (isinstance(p, Tensor) and p.dtype == torch.float64 and p.requires_grad):
                raise InvalidInput(f"params[{i}]", p, "a float64 tensor with requires_grad=True that func uses "
                                   "(only nn.Module funcs are converted to float64 automatically)")
    loss = RandomProjectionLoss(seed) if loss is None else loss
    span = abs(float(t[-1] - t[0]))
    scale = estimate_scale(func, y0, t)
    settings = dict(settings or {})
    for method in methods:
        settings.setdefault(method, accurate_settings(method, span, scale))

    runs = [run_pair(func, y0, t, m, g, settings=settings[m], loss=loss, params=params, catch=True)
            for m in methods for g in gradients]
    ok = [r for r in runs if r.status == "ok"]
    pair_tol = {r.label: (tolerance if tolerance is not None else
                          expected_error(r.method, settings[r.method], span, scale, steps=2 * r.steps))
                for r in ok}
    comparisons = []
    for a, b in itertools.combinations(ok, 2):
        worst, where = relative_disagreement(a.grads, b.grads)
        tol = tolerance if tolerance is not None else pair_tol[a.label] + pair_tol[b.label]
        comparisons.append(Comparison(a.label, b.label, worst, where, tol))
    fd = None
    if fd_directions and ok:
        fd = finite_differences(func, y0, t, loss, params=params, n_directions=fd_directions, seed=seed)
        for r in ok:
            tol = pair_tol[r.label] + (0 if tolerance is not None else ROUNDOFF)
            comparisons.append(Comparison(r.label, "finite differences", fd.error_of(r.grads),
                                          "direction", tol))
    notes = [f"float64; rate scale {scale:.3g}; span {span:.3g}; settings: "
             + "; ".join(f"{m}: {settings[m].describe()}" for m in methods)]
    if fd is not None:
        notes.append(f"finite differences: {fd_directions} directions, eps={fd.eps:g}, "
                     f"RK4 reference on {fd.steps} steps")
    return GradientReport(runs=runs, comparisons=comparisons, scale=scale, fd=fd, notes=notes)
