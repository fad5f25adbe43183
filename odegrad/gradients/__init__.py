"""Gradient backends. ``get_backend(name_or_object)`` resolves ``odeint(gradient=...)``."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidInput, UnknownName
from ._backsolve import Backsolve
from ._base import AdjointBackend, Backend, BlockNorm, Problem, func_vjp
from ._direct import Direct
from ._interpolation import Interpolation
from ._quadrature import GaussQuadrature

_REGISTRY: dict[str, Callable[[], Backend]] = {
    "direct": Direct,
    "backsolve": Backsolve,
    "gq": GaussQuadrature,
    "interp": Interpolation,
}

BACKEND_ALIASES = {"adjoint": "backsolve"}
"""Other names ``odeint(gradient=...)`` accepts, and the backend each stands for (``"adjoint"``:
torchdiffeq's name for the classic adjoint). ``backend_names()`` lists each backend once, so the
property suite does not run an alias twice."""


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``odeint(gradient=name)`` build ``factory()`` (and ``odeint_adjoint(gradient=name)``,
    with the ``adjoint_*`` settings, when it is an :class:`AdjointBackend`); property tests pick it up."""
    _REGISTRY[name] = factory


def backend_names() -> tuple[str, ...]:
    """Names ``odeint(gradient=...)`` accepts (``direct``, ``backsolve``, ``gq``, ``interp`` and
    any registered since)."""
    return tuple(_REGISTRY)


def get_backend(gradient: str | Backend) -> Backend:
    """Resolve a backend name (a new instance with default settings) or pass a Backend through.

    Raises:
        InvalidInput: ``gradient`` is neither a string nor a Backend.
        UnknownName: no backend is registered under that name (or alias, ``BACKEND_ALIASES``).
    """
    if isinstance(gradient, Backend):
        return gradient
    if not isinstance(gradient, str):
        raise InvalidInput("gradient", type(gradient).__name__,
                           "a gradient backend name or an odegrad Backend object")
    name = BACKEND_ALIASES.get(gradient, gradient)
    if name not in _REGISTRY:
        raise UnknownName("gradient", gradient, [*_REGISTRY, *BACKEND_ALIASES])
    return _REGISTRY[name]()


__all__ = ["AdjointBackend", "BACKEND_ALIASES", "Backend", "Backsolve", "BlockNorm", "Direct", "GaussQuadrature",
           "Interpolation", "Problem", "backend_names", "func_vjp", "get_backend", "register_backend"]
