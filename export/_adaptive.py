"""Adaptive Runge–Kutta solves as one graph: the step-size control loop is a
``torch._higher_order_ops.while_loop`` that the dynamo ONNX exporter lowers to an ONNX ``Loop``.

:class:`AdaptiveNeuralODE` reproduces odegrad's eager adaptive loop (``odegrad/solvers/_loop.py``
driven by ``AdaptiveStepping``) step for step: the same RK stages from the tableau, the same error
ratio (``PIController.scaled_error`` with the solve's norm, one step size shared by the batch), the
same accept/reject rule and next step (``PIController.next_step``: safety, ``ifactor``/``dfactor``
clip, the step never shrinking after an accepted step), the same Hairer–Wanner first step (or
``options['first_step']``) and the same dense output at the requested times (the tableau's
continuous extension, the step end itself at ``t1``). Times and step sizes are carried in float64,
as the eager loop's Python floats.

Where the eager solve raises (``max_steps`` reached, a non-finite error ratio, a step size that no
longer moves ``t``) the loop stops and the output times it did not reach are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch._higher_order_ops.while_loop import while_loop

from odegrad.errors import ExportError
from odegrad.models import NeuralODE
from odegrad.solvers import get_solver, make_config
from odegrad.solvers._controller import PIController
from odegrad.solvers._rk import ExplicitRK

ADAPTIVE_METHODS = ("dopri5", "tsit5", "bosh3")
"""Adaptive methods that :class:`AdaptiveNeuralODE` (and so ``to_onnx``) supports."""

_F64 = torch.float64


def loop_exportable(block: nn.Module) -> bool:
    """Whether ``block`` is a :class:`NeuralODE` with one of :data:`ADAPTIVE_METHODS`."""
    if not isinstance(block, NeuralODE):
        return False
    solver = get_solver(block.method)
    return isinstance(solver, ExplicitRK) and solver.name in ADAPTIVE_METHODS


class AdaptiveNeuralODE(nn.Module):
    """Inference twin of an adaptive (dopri5, tsit5, bosh3) :class:`NeuralODE` whose step-size
    control is a traceable while loop (an ONNX ``Loop`` once exported), sharing the block's func.

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]``, or
    ``Tensor[len(t), *batch, *state]`` when the block returns its trajectory; with
    ``with_counts`` also the accepted and rejected step counts (int64 scalars).

    Args:
        block: the NeuralODE; its func is shared, its times, tolerances and options read once.
        with_counts: also return ``(accepted, rejected)`` step counts (for checking that the
            exported loop takes the same steps as the eager solve).

    Raises:
        ExportError: the method is not one of :data:`ADAPTIVE_METHODS`, or the options ask for
            something the loop does not do (``step_t``, ``jump_t``, ``perturb``).
    """

    def __init__(self, block: NeuralODE, *, with_counts: bool = False):
        super().__init__()
        if not loop_exportable(block):
            raise ExportError(f"cannot export NeuralODE(method={block.method!r}) as an adaptive loop: "
                              f"supported methods are {', '.join(ADAPTIVE_METHODS)}")
        solver = get_solver(block.method)
        config = make_config(solver, block.rtol, block.atol, block.options)
        unsupported = [name for name, value in (("step_t", config.stops), ("jump_t", config.jumps),
                                                ("perturb", config.perturb)) if value]
        if unsupported:
            raise ExportError(f"cannot export this adaptive NeuralODE: options {unsupported} are not "
                              "supported in the exported loop; drop them, or use a fixed-step method "
                              "(euler, midpoint, heun, rk4) with options={'step_size': h}")
        self.func = block.func
        self.tableau = solver.tableau
        self.times = list(block.times)
        self.times_in = block.times_in
        self.config = config
        self.controller = config.controller or PIController()
        self.return_trajectory = block.return_trajectory
        self.with_counts = with_counts
        self.direction = 1.0 if self.times[-1] > self.times[0] else -1.0
        # float64 constants as a buffer: the ONNX exporter makes a Python float in float64
        # arithmetic a float32 constant (rounding the coefficients), and a while loop's body may
        # not create tensors
        tab, pi, order = self.tableau, self.controller, self.tableau.order
        values = {*tab.c, *(x for row in tab.a for x in row), *tab.b_error,
                  *(x for row in tab.dense for x in row), pi.safety, -pi.beta1 / order, pi.beta2 / order,
                  1.0, pi.dfactor, pi.ifactor, 1e-5, 1e-6, 0.01, 1e-15, 1e-3, 1.0 / order, self.direction,
                  self.direction * abs(config.first_step or 0.0)}
        self._slot = {value: i for i, value in enumerate(sorted(values))}
        self.register_buffer("constants", torch.tensor(sorted(values), dtype=_F64), persistent=False)
        self.register_buffer("rtol", torch.as_tensor(config.rtol, dtype=_F64).clone(), persistent=False)
        self.register_buffer("atol", torch.as_tensor(config.atol, dtype=_F64).clone(), persistent=False)
        first = next(block.func.parameters(), None)  # the buffers go where the field is (e.g. CUDA)
        if first is not None:
            self.to(first.device)

    def _f64(self, value: float) -> Tensor:
        """The float64 constant ``value`` (one of those gathered at construction)."""
        return self.constants[self._slot[value]]

    def _combine(self, base: Tensor | None, h: Tensor, coefficients: Sequence[float],
                 terms: Sequence[Tensor]) -> Tensor:
        """``base + Σ_i (h·coefficients[i]) · terms[i]`` skipping zero coefficients, each scale
        formed in float64 and rounded to the state's dtype as the eager ``Tensor.add(alpha=...)``."""
        result = base
        for coefficient, term in zip(coefficients, terms):
            if coefficient == 0.0:
                continue
            scaled = term * (h * self._f64(coefficient)).to(term.dtype)
            result = scaled if result is None else result + scaled
        return torch.zeros_like(terms[0]) if result is None else result

    def _f(self, t: Tensor, y: Tensor) -> Tensor:
        return self.func(t.to(y.dtype), y).to(y.dtype)

    def _step(self, t: Tensor, h: Tensor, y: Tensor, f: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One RK step as ``ExplicitRK.step``: ``(y1, error, stages)``. Every method of
        :data:`ADAPTIVE_METHODS` is FSAL: the last stage is evaluated at ``(t1, y1)``."""
        tab = self.tableau
        stages = [f]
        y1 = y
        for c, row in zip(tab.c[1:], tab.a[1:]):
            y1 = self._combine(y, h, row, stages)
            stages.append(self._f(t + self._f64(c) * h, y1))
        return y1, self._combine(None, h, tab.b_error, stages), stages

    def _tolerances(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(rtol, atol)`` in ``like``'s dtype with at least 2 dimensions: onnxscript's optimizer
        takes a scalar constant within 1e-8 of zero for zero and drops ``atol + x`` (odegrad's
        default atol is 1e-9); a broadcast shape keeps the add and its value."""
        rank = max(like.dim(), 2)
        return tuple(tol.to(like.device, like.dtype).reshape((1,) * (rank - tol.dim()) + tuple(tol.shape))
                     for tol in (self.rtol, self.atol))

    def _norm(self, x: Tensor) -> Tensor:
        return self.config.norm(x).to(_F64)

    def _first_step(self, t0: Tensor, y0: Tensor, f0: Tensor) -> Tensor:
        """``options['first_step']`` or the Hairer–Wanner heuristic (``initial_step``) as tensors."""
        c = self.config
        rtol, atol = self._tolerances(y0)
        if c.first_step is not None:
            return self._f64(self.direction * abs(c.first_step)).clone()  # carried: no view of a buffer
        scale = atol + y0.abs() * rtol
        d0, d1 = self._norm(y0 / scale), self._norm(f0 / scale)
        tiny = (d0 < self._f64(1e-5)) | (d1 < self._f64(1e-5))
        h0 = torch.where(tiny, self._f64(1e-6), self._f64(0.01) * d0 / d1)
        f1 = self._f(t0 + h0, y0 + h0.to(y0.dtype) * f0)
        d2 = self._norm((f1 - f0) / scale) / h0
        largest = torch.maximum(d1, d2)
        h1 = torch.where(largest <= self._f64(1e-15), torch.maximum(h0 * self._f64(1e-3), self._f64(1e-6)),
                         (self._f64(0.01) / largest) ** self._f64(1.0 / self.tableau.order))
        h = torch.minimum(100 * h0, h1)
        h = torch.where(torch.isfinite(h) & (h > 0), h, self._f64(1e-6))
        return self._f64(self.direction) * h

    def _next_step(self, h: Tensor, ratio: Tensor, previous: Tensor, accepted: Tensor) -> Tensor:
        """``PIController.next_step`` as tensors (``previous`` 0: no accepted step yet)."""
        pi, order = self.controller, self.tableau.order
        factor = self._f64(pi.safety) * ratio ** self._f64(-pi.beta1 / order)
        if pi.beta2:
            factor = torch.where(previous > 0, factor * previous ** self._f64(pi.beta2 / order), factor)
        lower = torch.where(accepted, self._f64(1.0), self._f64(pi.dfactor))
        clipped = torch.minimum(torch.maximum(factor, lower), self._f64(pi.ifactor))
        return h * torch.where(ratio == 0, self._f64(pi.ifactor), clipped)

    def _dense(self, t: Tensor, h: Tensor, y: Tensor, stages: list[Tensor], times: Tensor) -> Tensor:
        """The step's continuous extension (``ExplicitRK.interpolate``) at every output time:
        ``Tensor[len(times), *y.shape]``."""
        theta = ((times - t) / h).reshape(-1, *([1] * y.dim()))
        result = y.unsqueeze(0)
        for row, stage in zip(self.tableau.dense, stages):
            if not any(row):
                continue
            weight = sum(self._f64(w) * theta ** (p + 1) for p, w in enumerate(row))
            result = result + stage.unsqueeze(0) * (h * weight).to(y.dtype)
        return result

    def forward(self, y0: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """The block's output for ``y0`` (the state at the last time, or the whole trajectory),
        with the accepted/rejected step counts when ``with_counts``."""
        rounded = self.times_in(y0.dtype)
        times = torch.tensor(rounded, dtype=_F64, device=y0.device)
        count, direction = len(rounded), self.direction
        index = torch.arange(count, device=y0.device)
        shape = (count, *([1] * y0.dim()))
        t0 = times[0].clone()  # carried by the loop: must not alias its closure input `times`
        f0 = self._f(t0, y0)
        buffer = torch.cat([y0.unsqueeze(0), torch.full_like(y0, math.nan).unsqueeze(0).expand(count - 1, *y0.shape)])
        zero = torch.zeros((), dtype=torch.int64, device=y0.device)
        max_steps = self.config.max_steps
        rtol, atol = self._tolerances(y0)  # made here: the loop's body may not create tensors

        def running(accepted, rejected, t, h, ratio, previous, y, f, ys, out):
            return ((out < count) & (accepted + rejected < max_steps) & torch.isfinite(ratio)
                    & (t + h != t))

        def body(accepted, rejected, t, h, ratio, previous, y, f, ys, out):
            y1, error, stages = self._step(t, h, y, f)
            ratio = self.controller.scaled_error(y, y1, error, rtol, atol, self._norm)
            ok = ratio <= 1.0
            t1 = t + h
            reached = ok & (index >= out) & (direction * (times - t1) <= 0)
            at = torch.where((times == t1).reshape(shape), y1.unsqueeze(0), self._dense(t, h, y, stages, times))
            ys = torch.where(reached.reshape(shape), at, ys)
            previous = torch.where(ok, ratio, previous)  # AdaptiveStepping.judge updates it first
            return (accepted + ok.to(torch.int64), rejected + (~ok).to(torch.int64), torch.where(ok, t1, t),
                    self._next_step(h, ratio, previous, ok), ratio, previous,
                    torch.where(ok, y1, y), torch.where(ok, stages[-1], f), ys,
                    out + reached.to(torch.int64).sum())

        carried = (zero, zero.clone(), t0, self._first_step(t0, y0, f0), torch.zeros_like(t0),
                   torch.zeros_like(t0), y0, f0, buffer, torch.ones_like(zero))
        accepted, rejected, *_, ys, _ = while_loop(running, body, carried)
        result = ys if self.return_trajectory else ys[-1]
        return (result, accepted, rejected) if self.with_counts else result
