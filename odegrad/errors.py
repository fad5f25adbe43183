"""Exceptions raised by odegrad.

Every exception names the argument (or quantity) at fault, what it got and what was expected,
so that a user sees *why* a solve failed instead of a stack trace from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class OdegradError(Exception):
    """Base class of every error odegrad raises on purpose."""


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class InvalidInput(OdegradError, ValueError):
    """An argument has the wrong value, shape, dtype or device.

    Attributes:
        argument: name of the argument at fault (e.g. ``"t"``, ``"y0"``, ``"options['step_size']"``).
        got: what was passed (a short description).
        expected: what would have been accepted.
        hint: an optional sentence on how to fix it, appended to the message.

    The message reads ``invalid <argument>: got <got>; expected <expected>[. <hint>]``.
    """

    def __init__(self, argument: str, got: Any, expected: str, hint: str | None = None):
        self.argument = argument
        self.got = got
        self.expected = expected
        got_text = got if isinstance(got, str) else _describe(got)
        message = f"invalid {argument}: got {got_text}; expected {expected}"
        if hint:
            message += f". {hint}"
        super().__init__(message)


class UnknownName(InvalidInput):
    """A method, gradient backend or option name that odegrad does not know.

    Attributes:
        argument: what the name was for (e.g. ``"method"``, ``"gradient"``, ``"options key"``).
        got: the unknown name.
        valid: the names that would have been accepted (listed in the message).
    """

    def __init__(self, argument: str, got: str, valid: Sequence[str]):
        self.valid = tuple(valid)
        super().__init__(argument, repr(got), "one of " + ", ".join(repr(v) for v in self.valid))


class UnsupportedCombination(OdegradError, ValueError):
    """Two individually valid choices that cannot be used together."""


class TaylorModeUnsupported(UnsupportedCombination):
    """Taylor-mode arithmetic was requested for a func using an op without a Taylor rule.

    Attributes:
        op: name of the torch function / Tensor method without a rule.
        layer: the nn.Module running it (qualified name and type), when known.
    """

    def __init__(self, op: str, layer: str | None = None):
        self.op = op
        self.layer = layer
        where = f" in layer {layer}" if layer else ""
        super().__init__(f"Taylor mode has no rule for the op {op!r}{where}; use the nested-jvp "
                         f"fallback (Taylor(..., mode='jvp') or mode='auto') or build the vector "
                         f"field from supported ops (odegrad.jet.supported_ops())")


class NonFiniteValue(OdegradError, FloatingPointError):
    """NaN or Inf in an input or in a value produced by ``func``; ``what`` names that value in
    the message (e.g. ``"y0"``, ``"a value produced by func"``).

    Attributes:
        t: the time at which the non-finite value appeared (None for inputs).
        nfe: function evaluations made so far.
        bad_indices: indices along the first (batch) dimension holding non-finite entries.
        phase: where it was found: ``"input"``, ``"forward"`` (the solve), ``"backward"`` (the
            backward pass of a gradient backend) or ``"incoming gradient"`` (dL/dys arriving from
            the loss, upstream of odeint).
    """

    def __init__(self, what: str, t: float | None = None, nfe: int | None = None,
                 bad_indices: Sequence[int] | None = None, phase: str = "forward"):
        self.t = t
        self.nfe = nfe
        self.bad_indices = list(bad_indices) if bad_indices is not None else None
        self.phase = phase
        message = f"NaN/Inf in {what}" + (" during the backward pass" if phase == "backward" else "")
        if t is not None:
            message += f" at t={t:.6g}"
        if nfe is not None:
            message += f" after {nfe} function evaluations"
        if self.bad_indices:
            shown = ", ".join(str(i) for i in self.bad_indices[:10])
            more = "" if len(self.bad_indices) <= 10 else f" (+{len(self.bad_indices) - 10} more)"
            message += f"; batch entries {shown}{more} are affected"
        super().__init__(message)


class IntegrationFailure(OdegradError, RuntimeError):
    """The integrator could not reach the requested end time.

    The message is ``message`` followed by the time reached, the end time and the NFE.

    Attributes:
        t: time reached before failing.
        t_end: time that was requested.
        nfe: function evaluations made.
    """

    def __init__(self, message: str, t: float, t_end: float, nfe: int):
        self.t = t
        self.t_end = t_end
        self.nfe = nfe
        super().__init__(f"{message} (reached t={t:.10g} of t_end={t_end:.10g}, nfe={nfe})")


class StepSizeUnderflow(IntegrationFailure):
    """The adaptive step size became too small to make progress (often a stiff or blowing-up field)."""


class MaxStepsExceeded(IntegrationFailure):
    """More accepted + rejected steps were needed than ``options['max_steps']`` allows."""


class EventNotFound(IntegrationFailure):
    """A solve over an unbounded span (``odeint(..., event_fn=...)``, ``odeint_event``, a
    terminal event with ``t[-1] = ±inf``) ended without its terminal event firing: ``max_steps``
    ran out, or the time came within a factor 16 of the largest number t's dtype holds (past
    that the next step would overflow)."""


class ReverseSolveDrift(OdegradError, RuntimeError):
    """A backward solve that rebuilds y(t) in reverse time (backsolve, gq) drifted off the stored
    forward trajectory: its gradients would be wrong. ``message`` says where and by how much.

    Attributes:
        segment: index of the observation segment [t[segment], t[segment + 1]] whose start was missed.
        drift: the miss in tolerance units, max |Δy| / (atol + rtol·max|y|), the unit at least the
            dtype's rounding over the steps rebuilt, eps·√(2·steps)·max|y|.
    """

    def __init__(self, message: str, segment: int, drift: float):
        self.segment = segment
        self.drift = drift
        super().__init__(message)


class InterpolationError(OdegradError, RuntimeError):
    """A stored trajectory interpolant is not accurate enough to give trustworthy gradients."""


class ExportError(OdegradError):
    """A model cannot be exported, or an exported file is invalid."""


class ParityMismatch(ExportError):
    """An exported graph does not reproduce PyTorch within the tolerance (the file is not written).
    ``odegrad export`` exits 1 on it, 2 on any other error."""


class JacobianUnavailable(UnsupportedCombination):
    """An implicit method could not form the Jacobian of ``func`` with ``torch.func`` (a func using
    ops without autograd/vmap support, ``.item()``, numpy, in-place writes to its input...).

    The message names the solver option that avoids forming it (``jacobian="fd"``: finite
    differences, or ``jacobian="krylov"``: matrix-free).
    """


class LinearSolveFailure(OdegradError, RuntimeError):
    """An iterative linear solve of an implicit method (GMRES) did not reach its tolerance; the
    message gives the residual reached and the iterations spent."""
