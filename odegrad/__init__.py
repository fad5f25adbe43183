"""odegrad: neural ODEs where how you integrate and how you differentiate are independent choices."""

from . import errors, gradients, regularization, sde, solvers
from .api import odeint, solve
from .gradients import backend_names, get_backend, register_backend
from .solvers import Solution, Stats, StepRecord, get_solver, register_solver, solver_names

__version__ = "0.1.0"
"""The installed odegrad version (also printed by ``odegrad --version``)."""

__all__ = [
    "Solution", "Stats", "StepRecord", "backend_names", "errors", "get_backend", "get_solver",
    "gradients", "odeint", "register_backend", "register_solver", "regularization", "sde", "solve",
    "solver_names", "solvers", "__version__",
]
