"""Butcher tableaux of the explicit Runge–Kutta methods, with their continuous extensions.

A continuous extension is stored as ``dense[i][p]``: the interpolant over one step is

    y(t0 + θh) = y0 + h · Σ_i (Σ_p dense[i][p] · θ^(p+1)) · K_i,       0 ≤ θ ≤ 1,

where K are the stages of the step followed, for tableaux that are not FSAL, by f(t0 + h, y1)
(the next step's first stage, so it costs nothing extra). Adding a method means declaring a
tableau here and registering it in ``odegrad.solvers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr

import numpy as np
from numpy.polynomial import polynomial as P


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit RK method.

    Attributes:
        name: method name as used by ``odeint(method=...)``.
        order: order of the propagated solution (drives step-size control exponents).
        c, a, b: the usual nodes, lower-triangular matrix rows (a[i] has i entries) and weights.
        b_error: weights of the embedded error estimate (b - b_hat), or None for fixed-step methods.
        fsal: the last stage is evaluated at (t0 + h, y1) ("first same as last").
        dense: continuous-extension weights, see the module docstring.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None
    fsal: bool
    dense: tuple[tuple[float, ...], ...]


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _hermite_dense(b, fsal: bool, c_mid=None) -> tuple[tuple[float, ...], ...]:
    """Weights of the Hermite interpolant through y0, y1 (and y(1/2) when ``c_mid`` is given)
    with slopes f0 = K_0 and f1 = K_last. Quartic with a midpoint value, cubic without."""
    n = len(b) if fsal else len(b) + 1
    b = list(b) + ([] if fsal else [0.0])
    e0 = np.eye(n)[0]
    e1 = np.eye(n)[n - 1]
    # Unknown polynomial q(θ) = Σ_{p=1..deg} x_p θ^p with (y(θ) - y0)/h = q(θ) · K (per stage weights).
    deg = 3 if c_mid is None else 4
    rows = [[1.0] * deg,                                # q(1) = b        (y(1) = y1)
            [1.0] + [0.0] * (deg - 1),                  # q'(0) = e_0     (slope f0)
            [float(p) for p in range(1, deg + 1)]]      # q'(1) = e_last  (slope f1)
    rhs = [np.array(b, float), e0, e1]
    if c_mid is not None:
        rows.append([0.5 ** p for p in range(1, deg + 1)])
        rhs.append(np.array(list(c_mid) + ([] if fsal else [0.0]), float))
    coeffs = np.linalg.solve(np.array(rows), np.stack(rhs))  # (deg, n)
    return tuple(_floats(coeffs[:, i]) for i in range(n))


def _tableau(name, order, c, a, b, b_hat=None, fsal=False, dense=None) -> ButcherTableau:
    b_error = None if b_hat is None else _floats(Fr(x) - Fr(y) if isinstance(x, Fr) else x - y
                                                  for x, y in zip(b, b_hat))
    return ButcherTableau(
        name=name, order=order, c=_floats(c), a=tuple(_floats(row) for row in a), b=_floats(b),
        b_error=b_error, fsal=fsal, dense=dense if dense is not None else _hermite_dense(_floats(b), fsal),
    )


EULER = _tableau("euler", 1, c=[0], a=[[]], b=[1])
MIDPOINT = _tableau("midpoint", 2, c=[0, Fr(1, 2)], a=[[], [Fr(1, 2)]], b=[0, 1])
HEUN = _tableau("heun", 2, c=[0, 1], a=[[], [1]], b=[Fr(1, 2), Fr(1, 2)])
RK4 = _tableau(
    "rk4", 4, c=[0, Fr(1, 2), Fr(1, 2), 1],
    a=[[], [Fr(1, 2)], [0, Fr(1, 2)], [0, 0, 1]],
    b=[Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)],
)

BOSH3 = _tableau(
    "bosh3", 3, c=[0, Fr(1, 2), Fr(3, 4), 1],
    a=[[], [Fr(1, 2)], [0, Fr(3, 4)], [Fr(2, 9), Fr(1, 3), Fr(4, 9)]],
    b=[Fr(2, 9), Fr(1, 3), Fr(4, 9), 0],
    b_hat=[Fr(7, 24), Fr(1, 4), Fr(1, 3), Fr(1, 8)],
    fsal=True,
)

_DOPRI5_B = [Fr(35, 384), 0, Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84), 0]
# Shampine's midpoint value y(t0 + h/2) for Dormand–Prince 5(4) (as used by torchdiffeq/MATLAB).
_DOPRI5_C_MID = [Fr(6025192743, 30085553152) / 2, 0, Fr(51252292925, 65400821598) / 2,
                 Fr(-2691868925, 45128329728) / 2, Fr(187940372067, 1594534317056) / 2,
                 Fr(-1776094331, 19743644256) / 2, Fr(11237099, 235043384) / 2]
DOPRI5 = _tableau(
    "dopri5", 5, c=[0, Fr(1, 5), Fr(3, 10), Fr(4, 5), Fr(8, 9), 1, 1],
    a=[[], [Fr(1, 5)], [Fr(3, 40), Fr(9, 40)], [Fr(44, 45), Fr(-56, 15), Fr(32, 9)],
       [Fr(19372, 6561), Fr(-25360, 2187), Fr(64448, 6561), Fr(-212, 729)],
       [Fr(9017, 3168), Fr(-355, 33), Fr(46732, 5247), Fr(49, 176), Fr(-5103, 18656)],
       _DOPRI5_B[:6]],
    b=_DOPRI5_B,
    b_hat=[Fr(5179, 57600), 0, Fr(7571, 16695), Fr(393, 640), Fr(-92097, 339200), Fr(187, 2100),
           Fr(1, 40)],
    fsal=True,
    dense=_hermite_dense(_floats(_DOPRI5_B), True, _floats(_DOPRI5_C_MID)),
)


def _tsit5_dense() -> tuple[tuple[float, ...], ...]:
    """Tsitouras' own 4th-order interpolant: b_i(θ) as polynomials in θ (Tsitouras 2011, Table)."""
    factors = [
        (-1.0530884977290216, [[-1.3299890189751412, 1.0], [0.7139816917074209, -1.4364028541716351, 1.0]], 1),
        (0.1017, [[1.2949852507374631, -2.1966568338249754, 1.0]], 2),
        (2.490627285651252793, [[1.57803468208092486, -2.38535645472061657, 1.0]], 2),
        (-16.54810288924490272, [[-1.21712927295533244, 1.0], [-0.61620406037800089, 1.0]], 2),
        (47.37952196281928122, [[-1.203071208372362603, 1.0], [-0.658047292653547382, 1.0]], 2),
        (-34.87065786149660974, [[-1.2, 1.0], [-0.666666666666666667, 1.0]], 2),
        (2.5, [[-1.0, 1.0], [-0.6, 1.0]], 2),
    ]
    dense = []
    for scale, polys, theta_power in factors:
        poly = np.zeros(theta_power + 1)
        poly[theta_power] = scale
        for factor in polys:
            poly = P.polymul(poly, factor)
        poly = np.pad(poly, (0, 5 - len(poly)))
        dense.append(_floats(poly[1:5]))  # drop the (zero) constant term
    return tuple(dense)


_TSIT5_B = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
            -3.290069515436081, 2.324710524099774, 0.0]
TSIT5 = ButcherTableau(
    name="tsit5", order=5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=((), (0.161,), (-0.008480655492356989, 0.335480655492357),
       (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
       (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
       (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
        -0.02826905039406838),
       tuple(_TSIT5_B[:6])),
    b=tuple(_TSIT5_B),
    # Sign of the last entry follows the corrected tableau (OrdinaryDiffEq.jl issue 1654).
    b_error=(0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
             0.1447110071732629, -0.5823571654525552, 0.45808210592918697, -1 / 66),
    fsal=True,
    dense=_tsit5_dense(),
)

ALL_TABLEAUX = {tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RK4, BOSH3, DOPRI5, TSIT5)}
"""The built-in tableaux by method name (``euler``, ``midpoint``, ``heun``, ``rk4``, ``bosh3``,
``dopri5``, ``tsit5``); each is registered as an ``odeint`` method."""
