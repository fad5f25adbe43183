"""Explicit Runge–Kutta methods built from a Butcher tableau (fixed step or embedded adaptive)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor

from ..errors import UnknownName
from ._base import StepResult
from ._scalars import Scalar, const, exact
from ._step_solver import StepSolver
from ._tableaux import ALL_TABLEAUX, ButcherTableau


def _add_scaled(base: Tensor | None, scale: Scalar, coefficients: Sequence[float],
                terms: Sequence[Tensor]) -> Tensor:
    """``base + scale · Σ_i coefficients[i] · terms[i]`` skipping zero coefficients. ``scale`` is a
    float (eager driver: one fused add per term, ``alpha = scale · coefficient``, keeps the
    autograd graph of direct backprop small) or a float64 tensor (traced and per-sample drivers,
    one step size per entry: the combination first, then one product with the scale rounded to the
    terms' dtype)."""
    if isinstance(scale, Tensor):
        combination = _combination(coefficients, terms)
        if combination is None:
            return torch.zeros_like(terms[0]) if base is None else base
        scaled = combination * scale.to(combination.dtype)
        return scaled if base is None else base + scaled
    result = base
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0.0:
            continue
        if result is None:
            result = term * (scale * coefficient)
        else:
            result = result.add(term, alpha=scale * coefficient)
    if result is None:
        return torch.zeros_like(terms[0])
    return result


def _combination(coefficients: Sequence[float], terms: Sequence[Tensor]) -> Tensor | None:
    """``Σ_i coefficients[i] · terms[i]`` over the nonzero coefficients (None: all zero): fused adds
    with float coefficients eagerly, products while ``torch.compile`` traces, and while
    :func:`~._scalars.exact_constants` is active products with their float64 tensors rounded to
    the terms' dtype (an exported float would be rounded to float32)."""
    result = None
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0.0:
            continue
        constant = const(coefficient)
        if isinstance(constant, Tensor):
            scaled = term * constant.to(term.dtype)
        elif torch.compiler.is_compiling():  # an add's alpha becomes a symbolic float the loop's backward guards on
            scaled = term * constant
        else:
            result = term * constant if result is None else result.add(term, alpha=constant)
            continue
        result = scaled if result is None else result + scaled
    return result


def _theta(t0: Scalar, h: Scalar, t: Scalar, like: Tensor) -> Scalar:
    """``(t − t0) / h``; for a 1-D tensor of times ``Tensor[n, 1, ..., 1]`` (broadcast against a
    state like ``like``), so a step is read at every output time at once."""
    theta = (t - t0) / h
    if isinstance(theta, Tensor) and theta.dim() == 1:
        return theta.reshape(-1, *([1] * like.dim()))
    return theta


def _weighted(base: Tensor | None, h: Scalar, weights: Sequence[Scalar], terms: Sequence[Tensor],
              rows: Sequence[Sequence[float]]) -> Tensor:
    """``base + h · Σ_i weights[i] · terms[i]`` over the rows of the (float) dense-output matrix
    that are not all zero; weights are floats (one time) or tensors (times as a tensor, or exact
    constants)."""
    if not isinstance(weights[0], Tensor):
        return _add_scaled(base, h, weights, terms)
    result = base
    for weight, term, row in zip(weights, terms, rows):
        if any(row):
            result = _plus(result, term, h * weight)
    return torch.zeros_like(terms[0]) if result is None else result


def _plus(result: Tensor | None, term: Tensor, scale: Tensor) -> Tensor:
    """``result + scale · term`` (``scale · term`` when there is no result yet), the tensor
    ``scale`` rounded to the term's dtype first, as the eager fused add rounds its float alpha."""
    scaled = term * scale.to(term.dtype)
    return scaled if result is None else result + scaled


class ExplicitRK(StepSolver):
    """An explicit RK method defined by a :class:`ButcherTableau`.

    Adaptive (``error_estimate``) when the tableau has an embedded error estimate; the step state
    is the derivative at the step start (reused as the next first stage, FSAL or not), and each
    step's dense output is the tableau's continuous extension.

    Args:
        tableau: the method's coefficients (see ``ALL_TABLEAUX`` for the built-in ones).
    """

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_estimate = tableau.b_error is not None
        self.evaluations_per_step = len(tableau.c) - (1 if tableau.fsal else 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def init(self, func, t0: float, y0: Tensor) -> Tensor:
        """The first stage ``func(t0, y0)``, carried as the step state."""
        return func(t0, y0)

    def step(self, func, t0: float, h: float, y0: Tensor, state: Tensor) -> StepResult:
        """One RK step of signed size ``h`` from ``(t0, y0)``; ``state`` is ``func(t0, y0)``.

        Returns:
            ``StepResult(y1, error, dense_info, state, stiffness)``: ``error`` is
            ``h · Σ b_error_i K_i`` (None for fixed-step tableaux), ``dense_info`` is
            ``(y0, stages)``, ``state`` is the derivative at ``(t0 + h, y1)`` and ``stiffness``
            computes the Hairer–Wanner estimate from the last two stages when called.
        """
        tab = self.tableau
        stages = [state]
        inputs = [y0]
        for c, row in zip(exact((tab.c,))[0][1:], tab.a[1:]):
            y_stage = _add_scaled(y0, h, row, stages)
            stages.append(func(t0 + c * h, y_stage))
            inputs.append(y_stage)
        if tab.fsal:
            y1 = inputs[-1]
        else:
            y1 = _add_scaled(y0, h, tab.b, stages)
            stages.append(func(t0 + h, y1))
            inputs.append(y1)
        error = _add_scaled(None, h, tab.b_error, stages) if self.error_estimate else None
        return StepResult(y1, error, (y0, stages), stages[-1], partial(self.stiffness, inputs[-2:], stages[-2:], h))

    def stage_rule(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
        """The quadrature a step applies to its stages: ``(c_i, b_i, i)`` over the stages with a
        nonzero weight b_i (y1 = y0 + h Σ b_i K_i)."""
        tab = self.tableau
        used = tuple(i for i, b in enumerate(tab.b) if b != 0.0)
        return tuple(tab.c[i] for i in used), tuple(tab.b[i] for i in used), used

    def stage_states(self, dense_info, h: Scalar, stages: Sequence[int]) -> list[Tensor]:
        """The states the step evaluated its ``stages`` at, ``Y_i = y0 + h Σ_j a_ij K_j``, from its
        dense output ``(y0, K)`` (the arithmetic of :meth:`step`, so the same values)."""
        y0, k = dense_info
        return [y0 if i == 0 else _add_scaled(y0, h, self.tableau.a[i], k) for i in stages]

    def stiffness(self, inputs: list[Tensor], stages: list[Tensor], h: float) -> Tensor:
        """Hairer–Wanner stiffness estimate of a step, ``‖k_last − k_prev‖ / ‖g_last − g_prev‖ · |h|``
        (the last two stages and the states they were evaluated at): |hλ| of the dominant
        eigenvalue the step sees. Differentiable (local regularization trains on it)."""
        return (torch.linalg.vector_norm(stages[-1] - stages[-2])
                / torch.linalg.vector_norm(inputs[-1] - inputs[-2]).clamp_min(1e-300) * abs(h))

    def interpolate(self, dense_info, t0: Scalar, h: Scalar, t: Scalar) -> Tensor:
        """The tableau's continuous extension of the step ``[t0, t0 + h]`` at ``t``:
        ``Tensor[*y0.shape]``, or ``Tensor[n, *y0.shape]`` for a 1-D tensor of ``n`` times."""
        y0, stages = dense_info
        theta = _theta(t0, h, t, y0)
        powers = [theta ** (p + 1) for p in range(max(map(len, self.tableau.dense)))]  # once, not per row
        weights = [sum(w * powers[p] for p, w in enumerate(row)) for row in exact(self.tableau.dense)]
        return _weighted(y0, h, weights, stages, self.tableau.dense)

    def interpolate_derivative(self, dense_info, t0: Scalar, h: Scalar, t: Scalar) -> Tensor:
        """d/dt of :meth:`interpolate`: ``Σ_i (Σ_p (p + 1) dense[i][p] θ^p) K_i``."""
        y0, stages = dense_info
        theta = _theta(t0, h, t, y0)
        weights = [sum((p + 1) * w * theta ** p for p, w in enumerate(row)) for row in self.tableau.dense]
        return _weighted(None, 1.0, weights, stages, self.tableau.dense)

    def constants(self) -> tuple[float, ...]:
        """The float constants a step and its dense output use (see
        :func:`~odegrad.solvers._scalars.exact_constants`)."""
        tab = self.tableau
        return (*tab.c, *(x for row in tab.a for x in row), *tab.b, *(tab.b_error or ()),
                *(x for row in tab.dense for x in row))


def make_rk(name: str) -> ExplicitRK:
    """The explicit RK method of the registered tableau ``name`` (a key of ``ALL_TABLEAUX``)."""
    if name not in ALL_TABLEAUX:
        raise UnknownName("name", name, tuple(ALL_TABLEAUX))
    return ExplicitRK(ALL_TABLEAUX[name])
