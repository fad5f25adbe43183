"""The ``taylor`` integrator: fixed-order Taylor steps, optionally with the learned Lagrange
remainder of TL-NODE (Djeumou et al., 2022).

One step of order p from ``(t0, x)`` with step h:

    x⁺ = Σ_{k=0..p} h^k y_k(t0, x)  +  h^{p+1} · y_{p+1}(t0 + h/2, ξ),   ξ = x + Γ_φ(x) ⊙ f(t0, x)

where ``y_k = y^(k)/k!`` are Taylor coefficients of the solution (Taylor-mode arithmetic,
:mod:`odegrad.jet`) and the second term is the Lagrange remainder evaluated at a
learned intermediate point ξ (:class:`LearnedMidpoint`). Without a remainder network the step is the
plain truncated Taylor series (global order p). Fixed order and fixed steps: the cost is fixed and
the code has no data-dependent control flow (it traces and exports to one static graph).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int
from .._counting import counted
from ..errors import InvalidInput, TaylorModeUnsupported, UnsupportedCombination
from ..jet import check_order, jvp_coefficients, taylor_coefficients
from ._base import StepResult
from ._step_solver import StepSolver

MODES = ("auto", "taylor", "jvp")


class LearnedMidpoint(nn.Module):
    """The learned intermediate point of the Lagrange remainder: ``ξ = y + Γ_φ(y) ⊙ f``.

    ``Γ_φ`` is a small ReLU MLP acting on the last dimension of the state (size ``dim``), with
    truncated-normal initialisation as in the reference code. With ``bounded=True`` (default)
    ``Γ_φ = h · sigmoid(MLP(y))`` lies in (0, h), so ξ stays on the segment from y to the
    first-order prediction y + h·f — the mean-value box the paper enforces with an augmented
    Lagrangian penalty, here built into the parameterisation. The last layer starts at zero, so an
    untrained network gives ξ = y + (h/2)·f. ``bounded=False`` gives ``Γ_φ = h · (1/2 + MLP(y))``.

    Shapes: ``forward(y: [..., dim], f: [..., dim], h: float) -> [..., dim]``.

    Args:
        dim: size of the state's last dimension.
        hidden: width of the hidden layers.
        layers: number of hidden layers.
        bounded: keep ``Γ_φ`` in (0, h) (see above).
    """

    def __init__(self, dim: int, hidden: int = 32, layers: int = 2, bounded: bool = True):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("layers", layers)):
            check_int(f"LearnedMidpoint {name}", value, low=1)
        sizes = [dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            linear = nn.Linear(a, b)
            nn.init.trunc_normal_(linear.weight, std=a ** -0.5)
            nn.init.zeros_(linear.bias)
            blocks += [linear, nn.ReLU()]
        last = nn.Linear(sizes[-1], dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*blocks, last)
        self.dim = dim
        self.bounded = bounded

    def forward(self, y: Tensor, f: Tensor, h: float) -> Tensor:
        """The intermediate point ``ξ = y + h · Γ(y) ⊙ f`` for the step size ``h``."""
        raw = self.net(y)
        gamma = torch.sigmoid(raw) if self.bounded else raw + 0.5
        return y + (h * gamma) * f


def _horner(coeffs: list[Tensor], s: float) -> Tensor:
    result = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        result = c + s * result
    return result


class Taylor(StepSolver):
    """Fixed-step Taylor integrator (``method="taylor"``), optionally with a learned remainder.

    Args:
        order: Taylor order p >= 1 (coefficients y_0..y_p; the remainder adds y_{p+1} at ξ).
        remainder: None (plain truncated Taylor series) or an ``nn.Module`` called as
            ``remainder(y, f, h) -> ξ`` (e.g. :class:`LearnedMidpoint`). Its parameters are trained by
            the ``direct`` backend; they are not part of the ODE, so continuous-adjoint backends
            give them zero gradient.
        mode: how Taylor coefficients are computed: ``"taylor"`` (Taylor-mode arithmetic only;
            raises :class:`~odegrad.errors.TaylorModeUnsupported` naming the op and layer without a
            rule), ``"jvp"`` (nested ``torch.func.jvp``), ``"auto"`` (Taylor mode, falling back to
            nested jvp).

    Steps on the grid ``t`` or ``options['step_size']`` / ``options['grid']`` like every fixed-step
    method. NFE counts plain and jet evaluations of func alike: a jet evaluation of order k costs
    between k+1 (linear layers) and about (k+1)²/2 (nonlinear recurrences) plain evaluations; for
    an MLP at k = 1 we measured about 3x (forward + backward).

    Adjoint-type backends integrate an adjoint system built with ``torch.autograd.grad``, which has
    neither a Taylor rule nor nested-jvp support: give them a backward method, e.g.
    ``Backsolve(method="rk4")`` (the solve then raises UnsupportedCombination saying so).
    """

    error_estimate = False
    supports_autograd_func = False  # the adjoint systems' torch.autograd.grad has no Taylor rule

    def __init__(self, order: int = 3, remainder: nn.Module | None = None, mode: str = "auto"):
        self.order = check_order(order)
        if remainder is not None and not isinstance(remainder, nn.Module):
            raise InvalidInput("remainder", type(remainder).__name__,
                               "None or an nn.Module remainder(y, f, h) -> midpoint (e.g. LearnedMidpoint)")
        check_choice("mode", mode, MODES)
        self.remainder = remainder
        self.mode = mode
        self.name = "taylor"

    def __repr__(self) -> str:
        learned = "" if self.remainder is None else ", remainder=learned"
        return f"Taylor(order={self.order}{learned}, mode={self.mode!r})"

    def nfe_per_step(self) -> int:
        """Evaluations of func per step in Taylor mode (``p``, plus ``p + 1`` with a remainder)."""
        return self.order + (self.order + 1 if self.remainder is not None else 0)

    def coefficients(self, func: Callable, t: Tensor, y: Tensor, order: int,
                     f0: Tensor | None = None) -> list[Tensor]:
        """``[y_0..y_order]`` of the solution through ``(t, y)``, by ``self.mode``."""
        if self.mode == "jvp":
            return jvp_coefficients(func, t, y, order, f0)
        try:
            return taylor_coefficients(func, t, y, order, f0)
        except TaylorModeUnsupported as error:
            if self.mode == "taylor":
                raise
            try:
                return jvp_coefficients(func, t, y, order, f0)
            except (RuntimeError, TypeError, ValueError) as jvp_error:
                raise UnsupportedCombination(
                    f"the Taylor integrator cannot differentiate this func: Taylor mode has no rule "
                    f"for {error.op!r} and nested torch.func.jvp failed ({jvp_error}). Adjoint-type "
                    f"gradient backends integrate an adjoint system built with torch.autograd.grad; "
                    f"give them another backward method, e.g. Backsolve(method='rk4'), or use "
                    f"gradient='direct'") from None

    def init(self, func, t0: float, y0: Tensor) -> Tensor:
        """``func(t0, y0)``, reused as the first Taylor coefficient of the first step."""
        return func(t0, y0)

    def step(self, func, t0: float, h: float, y0: Tensor, state: Tensor | None) -> StepResult:
        """One Taylor step of size ``h`` from ``(t0, y0)`` (plus the learned remainder term).

        ``state`` is ``func(t0, y0)`` or None (then it is evaluated). Returns a StepResult with
        no error estimate, no carried state and ``dense_info = (coefficients, remainder term)``.
        """
        func = counted(func)
        t = func.time(t0, y0)
        f0 = state
        if f0 is None:
            f0 = func(t, y0)
        coeffs = self.coefficients(func, t, y0, self.order, f0)
        y1 = _horner(coeffs, h)
        r = None
        if self.remainder is not None:
            xi = self.remainder(y0, coeffs[1], h)
            r = self.coefficients(func, func.time(t0 + h / 2, y0), xi, self.order + 1)[-1]
            y1 = y1 + h ** (self.order + 1) * r
        return StepResult(y1, None, (coeffs, r), None, None)

    def interpolate(self, dense_info, t0: float, h: float, t: float) -> Tensor:
        """The step's Taylor polynomial (plus the remainder term scaled to ``t − t0``)."""
        coeffs, r = dense_info
        s = t - t0
        value = _horner(coeffs, s)
        return value if r is None else value + s ** (self.order + 1) * r

    def interpolate_derivative(self, dense_info, t0: float, h: float, t: float) -> Tensor:
        """d/dt of :meth:`interpolate` (the derivative of the step's polynomial)."""
        coeffs, r = dense_info
        s = t - t0
        value = _horner([k * c for k, c in enumerate(coeffs)][1:], s)
        return value if r is None else value + (self.order + 1) * s ** self.order * r

    def rollout(self, func: Callable, y0: Tensor, t0: float, h: float, steps: int) -> Tensor:
        """``steps`` fixed steps of size h from ``(t0, y0)``, without the shared loop: a pure,
        fixed sequence of tensor ops (used by :class:`odegrad.models.TLNODE`). Returns y(t0 + steps·h)."""
        y = y0
        for i in range(steps):
            y = self.step(func, t0 + i * h, h, y, None).y1
        return y
