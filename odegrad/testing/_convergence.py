"""Convergence of fixed-step gradients and the converged reference every pair is measured against.

Fixed-step methods are checked on *nested* grids: every output interval ``[t_i, t_{i+1}]`` is cut
into ``m_i`` equal steps (each ≤ h), then into ``2·m_i``. The step points are then a smooth function
of h, so an order-p method's result has the asymptotic expansion ``g(h) = g + C h^p + O(h^{p+1})``
and the Richardson value ``g_R = g(h/2) + (g(h/2) − g(h)) / (2^p − 1)`` is off by ``O(h^{p+1})``
only — the error model at order p + 1 bounds it. A gradient whose error does not shrink by 2^p
under step halving, whatever its size, leaves ``g_R`` off by about that error (a backend's
constant bias δ·g stays in ``g_R`` in full), so checking ``g_R`` against a converged reference
is a convergence test, not a size test.

The yardstick is never one of the pairs under test: :func:`converged_gradients` is backpropagation
through classical RK4 on nested grids refined until the Richardson value stops changing, built
from odegrad's ``Direct`` backend and RK4 tableau objects (not from the registries a user or a
test may have re-registered).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from .._checks import check_positive
from ..errors import InvalidInput
from ..gradients import Direct
from ..solvers import Integrator, get_solver, make_rk
from ._runs import Loss, PairRun, State, reference_error, run_pair
from ._tolerances import Settings, method_order


def segment_counts(t: Tensor, step: float) -> list[int]:
    """Steps per output interval of ``t`` (``Tensor[T]``) so that none is longer than ``step``."""
    step = check_positive("step", step)
    values = [float(v) for v in t.detach().tolist()]
    return [max(1, math.ceil(abs(b - a) / step - 1e-9)) for a, b in zip(values, values[1:])]


def nested_grid(t: Tensor, counts: Sequence[int], refine: int = 1) -> list[float]:
    """Step points through every ``t[i]`` (``Tensor[T]``), interval i cut into ``refine·counts[i]``
    equal steps: ``refine=2`` halves every step of ``refine=1``'s grid."""
    values = [float(v) for v in t.detach().tolist()]
    if len(counts) != len(values) - 1 or any(c < 1 for c in counts):
        raise InvalidInput("counts", list(counts), f"{len(values) - 1} positive step counts, one per interval of t")
    grid = [values[0]]
    for a, b, m in zip(values, values[1:], counts):
        n = m * refine
        grid.extend(a + (b - a) * k / n for k in range(1, n))
        grid.append(b)
    return grid


def halved_grids(settings: Settings, t: Tensor) -> tuple[Settings, Settings]:
    """Fixed-step ``settings`` (``step_size`` h, or a ``grid``) as two nested grids through the
    output times ``t``: steps ≤ h (the given grid itself) and every one of those steps halved."""
    options = settings.options
    if "grid" in options:
        coarse = [float(g) for g in options["grid"]]
        fine = [coarse[0]]
        for a, b in zip(coarse, coarse[1:]):
            fine.extend([(a + b) / 2, b])
    elif "step_size" in options:
        counts = segment_counts(t, abs(float(options["step_size"])))
        coarse, fine = nested_grid(t, counts), nested_grid(t, counts, refine=2)
    else:
        raise InvalidInput("settings.options", dict(options), "a 'step_size' or a 'grid' for a fixed-step method")
    rest = {k: v for k, v in options.items() if k not in ("grid", "step_size")}
    return (Settings(settings.rtol, settings.atol, {**rest, "grid": coarse}),
            Settings(settings.rtol, settings.atol, {**rest, "grid": fine}))


def richardson(coarse: Tensor, fine: Tensor, order: int) -> Tensor:
    """``fine + (fine − coarse) / (2^order − 1)``: the h and h/2 results of an order-``order``
    method extrapolated to h → 0 (same shapes in, same shape out)."""
    return fine + (fine - coarse) / (2 ** order - 1)


def run_converging(func: Callable, y0: State, t: Tensor, method: str | Integrator, gradient: object, *,
                   settings: Settings, loss: Loss, params: Sequence[Tensor] | None = None,
                   catch: bool = False) -> PairRun:
    """:func:`run_pair`, and for a fixed-step method its Richardson value instead: the pair run on
    the two nested grids of :func:`halved_grids` and its values and gradients extrapolated
    (``PairRun.extrapolated`` set, costs summed, ``settings`` = the coarse grid's). Adaptive
    methods run once, as :func:`run_pair`."""
    solver = get_solver(method)
    if solver.error_estimate:
        return run_pair(func, y0, t, method, gradient, settings=settings, loss=loss, params=params, catch=catch)
    coarse_settings, fine_settings = halved_grids(settings, t)
    coarse = run_pair(func, y0, t, method, gradient, settings=coarse_settings, loss=loss, params=params, catch=catch)
    if coarse.status != "ok":
        return coarse
    fine = run_pair(func, y0, t, method, gradient, settings=fine_settings, loss=loss, params=params, catch=catch)
    if fine.status != "ok":
        return fine
    return _extrapolated(coarse, fine, method_order(solver), coarse_settings)


@dataclass
class ConvergedReference:
    """A reference gradient converged to ``rel``: RK4 backpropagation on nested grids, refined
    until two successive Richardson values agree.

    Attributes:
        grads: gradient groups by name (as :attr:`PairRun.grads`).
        ys: the reference solution ``Tensor[T, ...]`` (tuple states concatenated on the last dim).
        steps: RK4 steps of the finest grid.
        change: the last refinement's relative change (:func:`reference_error`), ≤ ``rel``
            unless ``limit`` was reached.
    """

    grads: dict[str, Tensor]
    ys: Tensor | None
    steps: int
    change: float


_RK4_ORDER = 4


def converged_gradients(func: Callable, y0: State, t: Tensor, loss: Loss, *,
                        params: Sequence[Tensor] | None = None, rel: float = 1e-11,
                        start: int = 16, limit: int = 4096) -> ConvergedReference:
    """Gradients of ``loss(ys)`` that no pair under test computed: Richardson values of
    backpropagation through classical RK4 on nested grids of ``start``, 2·``start``, ... steps
    (over the whole span of ``t``, ``Tensor[T]``), stopping once two successive values differ by
    at most ``rel`` (their error is then ≲ rel/30) or the grid would exceed ``limit`` steps."""
    rk4, direct = make_rk("rk4"), Direct()
    span = abs(float(t[-1] - t[0]))
    counts = segment_counts(t, span / start)

    def at(refine: int) -> PairRun:
        settings = Settings(options={"grid": nested_grid(t, counts, refine)})
        return run_pair(func, y0, t, rk4, direct, settings=settings, loss=loss, params=params)

    refine, previous = 1, at(1)
    current = at(2)
    best = _extrapolated(previous, current, _RK4_ORDER)
    change = math.inf
    while sum(counts) * refine * 4 <= limit:
        refine *= 2
        previous, current = current, at(2 * refine)
        candidate = _extrapolated(previous, current, _RK4_ORDER)
        change = reference_error(candidate.grads, best.grads)[0]
        best = candidate
        if change <= rel:
            break
    return ConvergedReference(best.grads, best.ys, sum(counts) * refine * 2, change)


def _extrapolated(coarse: PairRun, fine: PairRun, order: int, coarse_settings: Settings | None = None) -> PairRun:
    """The Richardson value of two runs of an order-``order`` method on nested grids: grads and
    ys extrapolated, costs summed, ``extrapolated`` = the coarse grid's settings."""
    ys = None if coarse.ys is None or fine.ys is None else richardson(coarse.ys, fine.ys, order)
    return PairRun(fine.method, fine.gradient, "ok", value=fine.value,
                   grads={k: richardson(coarse.grads[k], g, order) for k, g in fine.grads.items()}, ys=ys,
                   nfe_forward=coarse.nfe_forward + fine.nfe_forward,
                   nfe_backward=coarse.nfe_backward + fine.nfe_backward, steps=fine.steps,
                   seconds=coarse.seconds + fine.seconds, extrapolated=coarse_settings)
