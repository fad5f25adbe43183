"""Solver settings that make a method accurate on a small test problem, and the error model that
turns those settings into the tolerance a gradient comparison is held to.

Error model (relative, normwise). Λ is the problem's rate scale (a bound on ‖∂f/∂y‖ and on the
forcing rate of time-dependent fields, e.g. ``field.rate_scale``; floored at 1/T), T the length
of the time span, p the method's order.

* Fixed step h: one step of an order-p method makes a local error of size ≈ c (hΛ)^{p+1} relative
  to the state, with c = 1/(p+1)! for RK methods on linear problems (the Taylor remainder of
  R(z) − e^z) and of the same order for smooth nonlinear fields; T/h steps add up to the global
  error ≈ c (hΛ)^p · ΛT. The suite takes c = 1, a bound that dominates the Taylor constants.
  Adjoint-type backends integrate the adjoint with the same method and step, so their gradient
  error obeys the same bound.
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
_RTOL = {1: 1e-4, 2: 1e-5, 3: 1e-6, 4: 1e-8}
_RTOL_HIGH = 1e-9
_MAX_FIXED_STEPS = 400
_ESTIMATE_FACTOR = 10.0     # true local error / embedded estimate
_SENSITIVITY_FACTOR = 10.0  # uncontrolled sensitivities of the frozen-step solution


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


def expected_error(method: str | Integrator, settings: Settings, span: float, scale: float,
                   steps: int = 0) -> float:
    """Relative error bound of values/gradients computed with ``method`` under ``settings``
    (see the module docstring); ``steps`` = accepted steps forward plus backward (adaptive only)."""
    span, scale = _check_scale(span, scale)
    solver = get_solver(method)
    order = method_order(solver)
    growth = math.exp(min(scale * span, 2.0))
    if solver.error_estimate:
        error = (_ESTIMATE_FACTOR * _SENSITIVITY_FACTOR * max(steps, 1)
                 * max(settings.rtol, settings.atol) * growth)
    else:
        h = settings.options.get("step_size")
        if h is None:
            raise InvalidInput("settings.options['step_size']", None,
                               "a step size: fixed-step methods are only accurate on a fine grid")
        error = (abs(h) * scale) ** order * max(1.0, scale * span) * growth
    return error + ROUNDOFF
