"""The gradient-correctness suite, for odegrad's own property tests and for users' models.

* :func:`check_gradients` — run a model through (method, gradient) pairs in float64; report every
  pair's gradient error against a converged reference (itself checked by finite differences per
  gradient group), NFE and time per pair, and a verdict against the error-model tolerance
  (``odegrad check`` on the command line).
* :func:`run_converging`, :func:`converged_gradients` — fixed-step runs on nested grids h, h/2
  and their Richardson value; the converged RK4 reference gradient.
* :func:`linear_solution`, :func:`linear_gradients` — exact solutions and gradients of
  linear/affine ODEs (``torch.linalg.matrix_exp``).
* :mod:`odegrad.testing.strategies` — hypothesis strategies (needs ``hypothesis``; imported lazily).
* :func:`accurate_settings`, :func:`expected_error` — accurate per-method settings and the error model.
"""

from __future__ import annotations

from typing import Any

from ._convergence import (
    ConvergedReference,
    converged_gradients,
    halved_grids,
    nested_grid,
    richardson,
    run_converging,
    segment_counts,
)
from ._fields import ForcedLinearField, LinearField, RandomMLPField, TupleField
from ._gradient_check import Comparison, GradientReport, check_gradients, estimate_scale
from ._references import linear_gradients, linear_solution, reference_solution
from ._runs import (
    GROUP_FLOOR,
    FiniteDifferences,
    PairRun,
    RandomProjectionLoss,
    finite_differences,
    named_params,
    reference_error,
    registered_pairs,
    relative_disagreement,
    run_pair,
)
from ._tolerances import ROUNDOFF, Settings, accurate_settings, expected_error, method_order, step_of

__all__ = [
    "GROUP_FLOOR", "Comparison", "ConvergedReference", "FiniteDifferences", "ForcedLinearField", "GradientReport",
    "LinearField", "RandomMLPField", "PairRun", "ROUNDOFF", "RandomProjectionLoss", "Settings", "TupleField",
    "accurate_settings", "check_gradients", "converged_gradients", "estimate_scale", "expected_error",
    "finite_differences", "halved_grids", "linear_gradients", "linear_solution", "method_order", "named_params",
    "nested_grid", "reference_error", "reference_solution", "registered_pairs", "relative_disagreement",
    "richardson", "run_converging", "run_pair", "segment_counts", "step_of", "strategies",
]


def __getattr__(name: str) -> Any:
    # hypothesis is a test-time dependency: import the strategies only when asked for.
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
