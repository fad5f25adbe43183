"""Coefficients of the implicit methods: stiffly accurate ESDIRK tableaux (Kværnø's 3(2), 4(3),
5(4); implicit Euler; the trapezoidal rule) and the Rodas4 Rosenbrock tableau.

An ESDIRK method has an explicit first stage (the derivative at the step start) and one diagonal
coefficient γ for every other stage:

    Y_i = y0 + h · Σ_{j<i} a[i][j] · k_j + h · γ · k_i,    k_i = f(t0 + c_i h, Y_i),

and is stiffly accurate: the last stage is the solution, y1 = Y_s (so c_s = 1). The coefficients of
Kværnø's methods are those of A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an
explicit first stage", BIT 44 (2004), in the closed forms in γ that diffrax also uses; the stage
predictors (the first Newton guess k_i ≈ Σ_j predictor[i][j] k_j) follow diffrax's devdocs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ESDIRKTableau:
    """Coefficients of a stiffly accurate ESDIRK method.

    Attributes:
        name: method name as used by ``odeint(method=...)``.
        order: order of the solution (drives step-size control exponents).
        gamma: the diagonal coefficient γ of the implicit stages.
        c: nodes of all stages, ``c[0] = 0`` and ``c[-1] = 1``.
        a: rows of the strictly lower triangle, ``a[i]`` has ``i`` entries (``a[0]`` is empty).
        b_error: ``b − b̂`` over all stages (the embedded estimate), or None for fixed-step methods.
        predictor: ``predictor[i]`` (``i`` entries) gives the first guess ``k_i ≈ Σ_j predictor[i][j] k_j``.
    """

    name: str
    order: int
    gamma: float
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b_error: tuple[float, ...] | None
    predictor: tuple[tuple[float, ...], ...]

    @property
    def stages(self) -> int:
        """Number of stages, the explicit first one included."""
        return len(self.c)


def _row(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _esdirk(name: str, order: int, gamma: float, c, a, b_hat=None, predictor=None) -> ESDIRKTableau:
    """A stiffly accurate ESDIRK tableau: b is the last row of A (with γ), ``b_hat`` the embedded weights."""
    b = [*a[-1], gamma]
    b_error = None if b_hat is None else _row(x - y for x, y in zip(b, b_hat))
    if predictor is None:  # k_i ≈ k_{i-1}
        predictor = [[0.0] * (i - 1) + [1.0] for i in range(1, len(c) + 1)]
    return ESDIRKTableau(name=name, order=order, gamma=float(gamma), c=_row([0.0, *c]),
                         a=((),) + tuple(_row(r) for r in a), b_error=b_error,
                         predictor=((),) + tuple(_row(r) for r in predictor))


def _kvaerno3() -> ESDIRKTableau:
    g = 0.43586652150
    a31, a32 = (-4 * g**2 + 6 * g - 1) / (4 * g), (-2 * g + 1) / (4 * g)
    a41, a42 = (6 * g - 1) / (12 * g), -1 / ((24 * g - 12) * g)
    a43 = (-6 * g**2 + 6 * g - 1) / (6 * g - 3)
    theta = 1 / (2 * g)
    return _esdirk("kvaerno3", 3, g, c=[2 * g, 1.0, 1.0],
                   a=[[g], [a31, a32], [a41, a42, a43]], b_hat=[a31, a32, g, 0.0],
                   predictor=[[1.0], [1 - theta, theta], [a31, a32, g]])


def _kvaerno4() -> ESDIRKTableau:
    g = 0.5728160625

    def poly(*coefficients: float) -> float:
        return float(np.polyval(coefficients, g))

    a31 = poly(144, -180, 81, -15, 1) * g / poly(12, -6, 1) ** 2
    a32 = poly(-36, 39, -15, 2) * g / poly(12, -6, 1) ** 2
    a41 = poly(-144, 396, -330, 117, -18, 1) / (12 * g**2 * poly(12, -9, 2))
    a42 = poly(72, -126, 69, -15, 1) / (12 * g**2 * poly(3, -1))
    a43 = poly(-6, 6, -1) * poly(12, -6, 1) ** 2 / (12 * g**2 * poly(12, -9, 2) * poly(3, -1))
    a51 = poly(288, -312, 120, -18, 1) / (48 * g**2 * poly(12, -9, 2))
    a52 = poly(24, -12, 1) / (48 * g**2 * poly(3, -1))
    a53 = -poly(12, -6, 1) ** 3 / (48 * g**2 * poly(3, -1) * poly(12, -9, 2) * poly(6, -6, 1))
    a54 = poly(-24, 36, -12, 1) / poly(24, -24, 4)
    c2, c3 = 2 * g, g + a31 + a32
    theta1, theta2 = c3 / c2, (1.0 - c2) / (c3 - c2)
    return _esdirk("kvaerno4", 4, g, c=[c2, c3, 1.0, 1.0],
                   a=[[g], [a31, a32], [a41, a42, a43], [a51, a52, a53, a54]],
                   b_hat=[a41, a42, a43, g, 0.0],
                   predictor=[[1.0], [1 - theta1, theta1], [0.0, 1 - theta2, theta2], [a41, a42, a43, g]])


def _kvaerno5() -> ESDIRKTableau:
    g = 0.26
    rows = [
        [g],
        [0.13, 0.84033320996790809],
        [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
        [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
         0.06962479448202728],
    ]
    predictor = [
        [1.0],
        [-1.366025403784441, 2.3660254037844357],
        [-0.19650552613122207, 0.8113579546496623, 0.38514757148155954],
        [0.10375304369958693, 0.937994698066431, -0.04174774176601781, 0.0],
        [-0.17281112873898072, 0.6235784481025847, 0.5492326806363959, 0.0, 0.0],
        [*rows[4], g],
    ]
    c = [sum(r) + g for r in rows]
    return _esdirk("kvaerno5", 5, g, c=c, a=rows, b_hat=[*rows[4], g, 0.0], predictor=predictor)


IMPLICIT_EULER = _esdirk("implicit_euler", 1, 1.0, c=[1.0], a=[[0.0]])
TRAPEZOID = _esdirk("trapezoid", 2, 0.5, c=[1.0], a=[[0.5]])
KVAERNO3 = _kvaerno3()
KVAERNO4 = _kvaerno4()
KVAERNO5 = _kvaerno5()

ESDIRK_TABLEAUX: dict[str, ESDIRKTableau] = {
    tableau.name: tableau for tableau in (KVAERNO3, KVAERNO4, KVAERNO5, IMPLICIT_EULER, TRAPEZOID)
}
"""The ESDIRK methods by name (each registered as ``odeint(method=name)``)."""


@dataclass(frozen=True)
class RosenbrockTableau:
    """Coefficients of a Rosenbrock method in Hairer–Wanner's transformed form: with
    ``W = I/(h·gamma) − J`` each stage solves

        W u_i = f(t0 + alpha_i h, y0 + Σ_{j<i} a[i][j] u_j) + Σ_{j<i} (c[i][j] / h) u_j + h · gamma_t_i · ∂f/∂t,

    and ``y1 = y0 + Σ m[i] u_i``, the error estimate ``Σ m_error[i] u_i``.

    Attributes:
        name, order: as for :class:`ESDIRKTableau`.
        gamma: the diagonal coefficient.
        alpha, gamma_t: per-stage time nodes and time-derivative coefficients.
        a, c: strictly lower rows (``a[i]``, ``c[i]`` have ``i`` entries).
        m, m_error: solution weights and error weights (``m − m̂``).
    """

    name: str
    order: int
    gamma: float
    alpha: tuple[float, ...]
    gamma_t: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    c: tuple[tuple[float, ...], ...]
    m: tuple[float, ...]
    m_error: tuple[float, ...]


_RODAS4_A = [
    [1.544],
    [0.9466785280815826, 0.2557011698983284],
    [3.314825187068521, 2.896124015972201, 0.9986419139977817],
    [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950],
    [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 1.0],
]
_RODAS4_C = [
    [-5.6688],
    [-2.430093356833875, -0.2063599157091915],
    [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
    [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
    [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054],
]
RODAS4 = RosenbrockTableau(
    name="rodas4", order=4, gamma=0.25,
    alpha=(0.0, 0.386, 0.21, 0.63, 1.0, 1.0),
    gamma_t=(0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0),
    a=((),) + tuple(_row(r) for r in _RODAS4_A),
    c=((),) + tuple(_row(r) for r in _RODAS4_C),
    m=_row([*_RODAS4_A[-1], 1.0]),
    m_error=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0),  # y1 − ŷ1 = u_6 (Rodas4's embedded solution is stage 6's input)
)
