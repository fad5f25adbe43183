"""Forward integrators. ``get_solver(name_or_object)`` resolves ``odeint(method=...)``.

Public contracts: :class:`Integrator` (anything that integrates, with declared capabilities),
:class:`StepSolver` (a one-step method driven by the shared loop), the stepping controllers, the
one evaluation counter :class:`CountedFunc`, :func:`unroll` (a fixed-step solve with Python
float times, for tracing and export) and :class:`StaticTimes` (the hook with which export reads the
output times of ``odeint`` calls inside a user's module once).
"""

from __future__ import annotations

from collections.abc import Callable

from .._checks import bad_batch_entries
from .._counting import CountedFunc, check_func_output, counted, is_tracing
from ..errors import InvalidInput, UnknownName
from ._base import (
    AcceptedStep,
    DenseOutput,
    IntegrationConfig,
    Integrator,
    Solution,
    Stats,
    StepRecord,
    StepResult,
)
from ._controller import AdaptiveStepping, FixedStepping, PIController, fixed_grid, rms_norm
from ._esdirk import ESDIRK, esdirk_factory, make_esdirk
from ._implicit_base import ImplicitSolver
from ._implicit_tableaux import ESDIRK_TABLEAUX
from ._jacobian import JACOBIAN_MODES, JacobianStructure
from ._loop import integrate_on_times, unroll
from ._options import VALID_OPTIONS, make_config, times_option
from ._per_sample import integrate_per_sample, solves_per_sample, sweep_per_sample
from ._rk import ExplicitRK, make_rk
from ._rosenbrock import Rosenbrock, rodas4
from ._scalars import exact_constants
from ._static import StaticSolve, StaticTimes, require_unrollable
from ._step_solver import StepSolver, uses_traced_driver
from ._tableaux import ALL_TABLEAUX, ButcherTableau
from ._taylor import LearnedMidpoint, Taylor
from ._time_axis import TimeAxis
from ._traced import Status, integrate_traced, traced_constants, traced_unsupported

_REGISTRY: dict[str, Callable[[], Integrator]] = {
    name: (lambda name=name: make_rk(name)) for name in ALL_TABLEAUX
}


def register_solver(name: str, factory: Callable[[], Integrator]) -> None:
    """Make ``odeint(method=name)`` build ``factory()``; property tests pick registered solvers up."""
    _REGISTRY[name] = factory


register_solver("taylor", Taylor)
for _name in ESDIRK_TABLEAUX:
    register_solver(_name, lambda name=_name: make_esdirk(name))
register_solver("rodas4", rodas4)


def solver_names() -> tuple[str, ...]:
    """Names ``odeint(method=...)`` accepts (besides ``"torchdiffeq:<name>"``)."""
    return tuple(_REGISTRY)


def get_solver(method: str | Integrator) -> Integrator:
    """Resolve a method name (``"dopri5"``, ``"torchdiffeq:rk4"``, ...) or pass an Integrator through."""
    if isinstance(method, Integrator):
        return method
    if not isinstance(method, str):
        raise InvalidInput("method", type(method).__name__, "a method name or an odegrad Integrator")
    if method.startswith("torchdiffeq:"):
        from ._torchdiffeq import TorchdiffeqSolver  # torchdiffeq is imported only when asked for

        return TorchdiffeqSolver(method.split(":", 1)[1])
    if method not in _REGISTRY:
        raise UnknownName("method", method, [*_REGISTRY, "torchdiffeq:<name>"])
    return _REGISTRY[method]()


def _rk_factory(name: str, description: str) -> Callable[[], ExplicitRK]:
    def factory() -> ExplicitRK:
        return make_rk(name)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{description}: ``odeint(method={name!r})`` as a solver object."
    return factory


euler = _rk_factory("euler", "The explicit Euler method (order 1, fixed step)")
midpoint = _rk_factory("midpoint", "The explicit midpoint method (order 2, fixed step)")
heun = _rk_factory("heun", "Heun's method (order 2, fixed step)")
rk4 = _rk_factory("rk4", "The classic Runge–Kutta method (order 4, fixed step)")
bosh3 = _rk_factory("bosh3", "Bogacki–Shampine 3(2) (adaptive)")
dopri5 = _rk_factory("dopri5", "Dormand–Prince 5(4) (adaptive)")
tsit5 = _rk_factory("tsit5", "Tsitouras 5(4) (adaptive)")
kvaerno3 = esdirk_factory("kvaerno3", "Kværnø's ESDIRK 3(2), L-stable, for stiff problems (adaptive)")
kvaerno4 = esdirk_factory("kvaerno4", "Kværnø's ESDIRK 4(3), L-stable, for stiff problems (adaptive)")
kvaerno5 = esdirk_factory("kvaerno5", "Kværnø's ESDIRK 5(4), L-stable, for stiff problems (adaptive)")
implicit_euler = esdirk_factory("implicit_euler", "The implicit Euler method (order 1, fixed step, L-stable)")
trapezoid = esdirk_factory("trapezoid", "The trapezoidal rule (order 2, fixed step, A-stable)")


__all__ = [
    "ALL_TABLEAUX", "AcceptedStep", "AdaptiveStepping", "ButcherTableau", "CountedFunc", "DenseOutput", "ESDIRK",
    "ESDIRK_TABLEAUX", "ExplicitRK", "ImplicitSolver", "JACOBIAN_MODES", "JacobianStructure", "Rosenbrock",
    "FixedStepping", "IntegrationConfig", "Integrator", "LearnedMidpoint", "PIController", "Solution",
    "StaticSolve", "StaticTimes", "Stats", "Status", "StepRecord", "StepResult", "StepSolver", "Taylor", "TimeAxis",
    "VALID_OPTIONS",
    "bad_batch_entries",
    "bosh3", "check_func_output", "counted", "dopri5", "euler", "fixed_grid", "get_solver", "heun",
    "implicit_euler", "kvaerno3", "kvaerno4", "kvaerno5", "make_esdirk", "rodas4", "trapezoid",
    "exact_constants", "integrate_on_times", "integrate_traced", "is_tracing", "make_config", "make_rk",
    "midpoint", "register_solver",
    "require_unrollable", "rk4",
    "integrate_per_sample", "rms_norm", "solver_names", "solves_per_sample", "times_option", "traced_constants",
    "sweep_per_sample", "uses_traced_driver",
    "traced_unsupported", "tsit5", "unroll",
]
