"""Solver settings that make a method accurate on a small test problem, and the error model that
turns those settings into the tolerance a gradient comparison is held to.

Error model (relative, normwise). Λ is the problem's rate scale (a bound on ‖∂f/∂y‖ and on the
forcing rate of time-dependent fields, e.g. ``field.rate_scale``; floored at 1/T), T the length
of the time span, p the method's order.

* Fixed step h: one step of an order-p method makes a local error of size ≈ c (hΛ)^{p+1} relative
  to the state, with c = 1/(p+1)! for RK methods on linear problems (the Taylor remainder of
  R(z) − e^z) and of the same order for smooth nonlinear fields. The global error of a result is
  the sum of the local errors of every step whose error reaches it, carried by the growth of
  perturbations: M steps give ≈ c (hΛ)^{p+1} · M = c (hΛ)^p · ΛMh. A value comes from the
  forward solve alone, M = T/h: c (hΛ)^p · ΛT. A gradient comes from the forward solve (its
  error in y_i enters through dL/dy_i) *and* a backward solve of the same step over the same
  span, whose local errors add to the forward's rather than staying within its bound: the
  discrete sensitivities of ``direct``, the adjoint of every adjoint backend, and for
  ``backsolve``/``gq`` the reverse-time rebuild of y, an error of its own (an explicit step
  backwards does not undo the step forwards: on a rotation y' = Ay, A's eigenvalues ±iω, Euler
  grows the amplitude by 1 + (hω)²/2 per step in both directions, so forward and reverse errors
  add instead of cancelling). So M = 2T/h — the forward plus backward steps, exactly as N + N'
  below — and ``steps`` passes M; without it M = T/h. The suite takes c = 1, a bound that
  dominates the Taylor constants. (The earlier rule held the backward solve within the forward's
  bound, M = T/h for gradients too; the dev property run measured euler/backsolve on an
  oscillatory affine field at 3.1e-2 against its 2.7e-2. Measured on such fields: the gradient
  errors of all four backends halve with h and lie within 20% of each other — the bound, not a
  backend, was off — and reach at most 0.45 of this bound in 300 random draws, 0.57 for the
  reported case. A targeted search, hypothesis.target, still found 1.1 for a parameter group 7×
  smaller than the largest group: groups are measured against their own size, floored at
  GROUP_FLOOR of the largest, while discretisation errors scale with the whole gradient.)
* Adaptive with tolerances (rtol, atol): every accepted step keeps its local error below
  rtol·|y| + atol, so after N steps forward and N' backward the global error is at most
  ≈ (N + N') · max(rtol, atol / |y|) times the growth of perturbations, bounded here by
  ``e^{min(ΛT, 2)}`` (the suite's problems keep ΛT small), times 10 for the ratio between the
  embedded estimate and the true local error, times 10 because the controller watches y only:
  the sensitivities ∂y/∂θ that direct backpropagation differentiates through the frozen steps
  are not error-controlled (measured: tsit5 at rtol 1e-9 taking 3 steps gave a direct gradient
  120 · N · rtol off, within this bound; the adjoint backends control the adjoint's error).
* Every comparison adds :data:`ROUNDOFF` (float64 round-off accumulated over ≤ 10⁴ operations
  and the finite-difference references' ε² truncation).

Two computations that each meet their bound differ by at most the sum of the bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .._checks import check_non_negative, check_positive
from ..errors import InvalidInput
from ..solvers import Integrator, get_solver

ROUNDOFF = 1e-9
"""Added to every error bound: float64 round-off over ≤ 10⁴ operations and the finite-difference
references' ε² truncation."""
# Largest step (as hΛ) per order: the predicted error (hΛ)^p·ΛT is ~1e-2 for p = 1, ~1e-3 for
# p = 2 and ≤ 1e-4 for p ≥ 3, while the suite's problems (ΛT ≲ 2) need at most ~200 steps.
_STEP_SCALE = {1: 0.01, 2: 0.03, 3: 0.05, 4: 0.1}
_STEP_SCALE_HIGH = 0.2
# Adaptive rtol per order: tight enough for ≲ 1e-5 relative gradients, loose enough that a
# low-order method needs only tens of steps.
_RTOL = {1: 1e-4, 2: 1e-5, 3: 1e-8, 4: 1e-8}
_RTOL_HIGH = 1e-9
_MAX_FIXED_STEPS = 400
_ESTIMATE_FACTOR = 10.0     # true local error / embedded estimate
_SENSITIVITY_FACTOR = 10.0  # uncontrolled sensitivities of the frozen-step solution
_ADAPTIVE_FACTOR = _ESTIMATE_FACTOR * _SENSITIVITY_FACTOR


@dataclass(frozen=True)
class Settings:
    """How to call ``odeint`` for one solver: ``rtol``, ``atol`` and ``options`` (e.g. step_size)."""

    rtol: float = 1e-7
    atol: float = 1e-9
    options: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``odeint``/``solve`` (a copy of ``options``)."""
        return {"rtol": self.rtol, "atol": self.atol, "options": dict(self.options)}

    def describe(self) -> str:
        """``"step_size=..."`` for fixed-step settings, else ``"rtol=..., atol=..."``."""
        if "step_size" in self.options:
            return f"step_size={self.options['step_size']:.4g}"
        return f"rtol={self.rtol:.0e}, atol={self.atol:.0e}"


def method_order(solver: Integrator) -> int:
    """The solver's declared order of accuracy (1 where it declares none)."""
    return solver.order or 1


def _check_scale(span: float, scale: float) -> tuple[float, float]:
    """(T, Λ) with Λ floored at 1/T: parts of a solution or of its parameter sensitivities that
    are polynomial in time (affine terms, ∫ y dt) vary on the scale of the span itself — for
    y' = b, Euler's dL/dA = Σ h y_n is a Riemann sum of ∫ y dt with relative error ≈ h/T."""
    span = check_positive("span", span)
    scale = check_non_negative("scale", scale)
    return span, max(scale, 1.0 / span)


def accurate_settings(method: str | Integrator, span: float, scale: float) -> Settings:
    """Settings under which ``method`` is accurate on a problem with time span ``span`` (=|T|) and
    rate scale ``scale`` (=Λ): a step size for fixed-step methods, rtol/atol for adaptive ones."""
    span, scale = _check_scale(span, scale)
    solver = get_solver(method)
    order = method_order(solver)
    if solver.error_estimate:
        rtol = _RTOL.get(order, _RTOL_HIGH)
        return Settings(rtol=rtol, atol=rtol * 1e-2)
    h = _STEP_SCALE.get(order, _STEP_SCALE_HIGH) / scale
    steps = min(max(math.ceil(span / h), 4), _MAX_FIXED_STEPS)
    return Settings(options={"step_size": span / steps})


def step_of(settings: Settings) -> float:
    """The largest step of fixed-step ``settings``: ``step_size``, or the widest gap of ``grid``.

    Raises:
        InvalidInput: the settings have neither (fixed-step methods are only accurate on a fine grid).
    """
    options = settings.options
    if "step_size" in options:
        return abs(float(options["step_size"]))
    grid = options.get("grid")
    if grid is None or len(grid) < 2:
        raise InvalidInput("settings.options['step_size']", None,
                           "a step size or a grid: fixed-step methods are only accurate on a fine grid")
    return max(abs(float(b) - float(a)) for a, b in zip(grid, grid[1:]))


def expected_error(method: str | Integrator, settings: Settings, span: float, scale: float,
                   steps: int = 0, extrapolated: bool = False) -> float:
    """Relative error bound of values/gradients computed with ``method`` under ``settings``
    (see the module docstring); ``steps`` = accepted steps forward plus backward: N + N' for
    adaptive methods, and for fixed-step methods the time they cover, ``steps · h``, in place of
    the span T when it is longer (a gradient: forward and backward solve, 2T).
    ``extrapolated``: the bound of a fixed-step method's Richardson value from ``settings``' grid
    and its halving (see :mod:`odegrad.testing._convergence`): the model at order p + 1, divided
    by 2(2^p − 1), the factor by which extrapolation shrinks the h^{p+1} term."""
    span, scale = _check_scale(span, scale)
    solver = get_solver(method)
    order = method_order(solver)
    growth = math.exp(min(scale * span, 2.0))
    if solver.error_estimate:
        error = (_ADAPTIVE_FACTOR * max(steps, 1) * max(settings.rtol, settings.atol) * growth)
    else:
        h = step_of(settings)
        stepped = max(span, h * steps)  # time covered by the steps whose errors add up
        power = order + 1 if extrapolated else order
        shrink = 2 * (2 ** order - 1) if extrapolated else 1
        error = (h * scale) ** power * max(1.0, scale * stepped) * growth / shrink
    return error + ROUNDOFF
