"""The gradient-correctness suite, for odegrad's own property tests and for users' models.

* :func:`check_gradients` — run a model through (method, gradient) pairs in float64; report every
  pair's gradient disagreement with every other pair and with finite differences, NFE and time
  per pair, and a verdict against the error-model tolerance (``odegrad check`` on the command line).
* :func:`linear_solution`, :func:`linear_gradients` — exact solutions and gradients of
  linear/affine ODEs (``torch.linalg.matrix_exp``).
* :mod:`odegrad.testing.strategies` — hypothesis strategies (needs ``hypothesis``; imported lazily).
* :func:`accurate_settings`, :func:`expected_error` — accurate per-method settings and the error model.
"""

from __future__ import annotations

from typing import Any

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
    registered_pairs,
    relative_disagreement,
    run_pair,
)
from ._tolerances import ROUNDOFF, Settings, accurate_settings, expected_error, method_order

__all__ = [
    "GROUP_FLOOR", "Comparison", "FiniteDifferences", "ForcedLinearField", "GradientReport", "LinearField",
    "RandomMLPField", "PairRun", "ROUNDOFF", "RandomProjectionLoss", "Settings", "TupleField",
    "accurate_settings", "check_gradients", "estimate_scale", "expected_error", "finite_differences",
    "linear_gradients", "linear_solution", "method_order", "named_params", "reference_solution", "registered_pairs",
    "relative_disagreement", "run_pair", "strategies",
]


def __getattr__(name: str) -> Any:
    # hypothesis is a test-time dependency: import the strategies only when asked for.
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
