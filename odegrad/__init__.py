"""odegrad: neural ODEs where how you integrate and how you differentiate are independent choices."""

from . import errors, events, gradients, regularization, sde, solvers
from .api import odeint, odeint_adjoint, odeint_event, solve
from .events import Event
from .gradients import backend_names, get_backend, register_backend
from .solvers import Solution, Stats, StepRecord, get_solver, register_solver, solver_names

__version__ = "0.1.0"
"""The installed odegrad version (also printed by ``odegrad --version``)."""

__all__ = [
    "Event", "Solution", "Stats", "StepRecord", "backend_names", "errors", "events", "get_backend",
    "get_solver", "gradients", "odeint", "odeint_adjoint", "odeint_event", "register_backend",
    "register_solver", "regularization", "sde", "solve", "solver_names", "solvers", "__version__",
]
