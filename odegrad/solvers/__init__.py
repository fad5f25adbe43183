"""Forward integrators. ``get_solver(name_or_object)`` resolves ``odeint(method=...)``."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidInput, UnknownName
from .base import (
    DenseOutput,
    IntegrationConfig,
    Integrator,
    Solution,
    Stats,
    StepRecord,
    StepResult,
    StepSolver,
    rms_norm,
)
from .controller import PIController
from .rk import ExplicitRK, make_rk
from .tableaux import ALL_TABLEAUX, ButcherTableau
from .tlnode import LearnedMidpoint, Taylor

_REGISTRY: dict[str, Callable[[], Integrator]] = {
    name: (lambda name=name: make_rk(name)) for name in ALL_TABLEAUX
}


def register_solver(name: str, factory: Callable[[], Integrator]) -> None:
    """Make ``odeint(method=name)`` build ``factory()``; property tests pick registered solvers up."""
    _REGISTRY[name] = factory


register_solver("taylor", Taylor)


def solver_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_solver(method: str | Integrator) -> Integrator:
    """Resolve a method name (``"dopri5"``, ``"torchdiffeq:rk4"``, ...) or pass an Integrator through."""
    if isinstance(method, Integrator):
        return method
    if not isinstance(method, str):
        raise InvalidInput("method", type(method).__name__, "a method name or an odegrad Integrator")
    if method.startswith("torchdiffeq:"):
        from .external import TorchdiffeqSolver

        return TorchdiffeqSolver(method.split(":", 1)[1])
    if method not in _REGISTRY:
        raise UnknownName("method", method, [*_REGISTRY, "torchdiffeq:<name>"])
    return _REGISTRY[method]()



def _named(name: str) -> Callable[[], ExplicitRK]:
    def factory() -> ExplicitRK:
        return make_rk(name)

    factory.__name__ = factory.__qualname__ = name.capitalize()
    factory.__doc__ = f"The {name} method as a configured solver object."
    return factory


Euler, Midpoint, Heun, RK4, Bosh3, Dopri5, Tsit5 = (
    _named(n) for n in ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5"))

__all__ = [
    "ALL_TABLEAUX", "ButcherTableau", "DenseOutput", "ExplicitRK", "IntegrationConfig", "LearnedMidpoint", "Taylor",
    "Integrator", "PIController", "Solution", "Stats", "StepRecord", "StepResult", "StepSolver",
    "get_solver", "register_solver", "rms_norm", "solver_names",
    "Euler", "Midpoint", "Heun", "RK4", "Bosh3", "Dopri5", "Tsit5",
]
