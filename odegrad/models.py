"""nn.Modules built on :func:`odegrad.odeint`: the adaptive/fixed-step :class:`NeuralODE` block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_in_range, check_int, check_positive, check_state
from ._counting import is_tracing
from .api import odeint, solve
from .errors import InvalidInput
from .gradients import AdjointBackend, get_backend
from .regularization import Regularizer, check_regularizer
from .solvers import CountedFunc, StepSolver, Taylor, get_solver, make_config, times_option, unroll

MAX_TLNODE_STEPS = 100_000
"""Most fixed steps a TLNODE may take per forward pass (the default ``max_steps`` of odeint)."""


def _check_times(times: Sequence[float] | Tensor) -> tuple[float, ...]:
    values = times_option("t", times)
    if len(values) < 2:
        raise InvalidInput("t", values, "at least two output times (start and end)")
    diffs = [b - a for a, b in zip(values, values[1:])]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise InvalidInput("t", values, "strictly increasing or strictly decreasing times")
    return tuple(values)


class NeuralODE(nn.Module):
    """An ODE block ``y0 -> y(t_end)`` (or the whole trajectory) with a learned vector field.

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, y)``.
        t: output times (start first); kept as Python floats so fixed-step models trace to a
            static graph.
        method, gradient, rtol, atol, options: as in :func:`odegrad.odeint`.
        return_trajectory: return ``Tensor[len(t), *y0.shape]`` instead of the final state.
        regularization: None or an :mod:`odegrad.regularization` term; after each forward pass in
            training mode ``self.regularization`` holds its scalar value (add it to the training
            loss). In eval mode (``model.eval()``) the term is skipped: predictions pay nothing for it.

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]`` (final state) or
    ``Tensor[len(t), *batch, *state]`` with ``return_trajectory``.

    Raises:
        InvalidInput: ``func`` is not an ``nn.Module``, or ``t`` is not at least two finite,
            strictly monotone times. Method, gradient and options are checked at the first call.
    """

    def __init__(self, func: nn.Module, t: Sequence[float] | Tensor = (0.0, 1.0), *,
                 method: str = "dopri5", gradient: str = "direct", rtol: float = 1e-7, atol: float = 1e-9,
                 options: Mapping[str, Any] | None = None, return_trajectory: bool = False,
                 regularization: Regularizer | None = None):
        super().__init__()
        if not isinstance(func, nn.Module):
            raise InvalidInput("func", type(func).__name__, "an nn.Module vector field func(t, y)")
        self.func = func
        self.times = _check_times(t)
        self._times_as = {dtype: torch.tensor(self.times, dtype=dtype, device="cpu").tolist()
                          for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
        self.method = method
        self.gradient = gradient
        self.rtol = rtol
        self.atol = atol
        if options is not None and not isinstance(options, Mapping):
            raise InvalidInput("options", type(options).__name__, "a dict of solver options")
        self.options = dict(options or {})
        self.return_trajectory = return_trajectory
        self.regularizer = check_regularizer(regularization)
        self.regularization: Tensor | None = None

    def times_in(self, dtype: torch.dtype) -> list[float]:
        """The block's output times as :func:`odegrad.odeint` steps on them for a ``y0`` of
        ``dtype``: rounded to it (in float32, 0.3 is a hair above 0.3), as Python floats. Read
        from a table built at construction, so traced and compiled passes read no tensor.

        Raises:
            InvalidInput: ``dtype`` is not a ``torch.dtype``."""
        if not isinstance(dtype, torch.dtype):
            raise InvalidInput("dtype", dtype, "a torch.dtype, e.g. torch.float32")
        return self._times_as.get(dtype, list(self.times))

    def forward(self, y0: Tensor) -> Tensor:
        """Solve from ``y0`` over the block's times: the final state, or the whole trajectory
        with ``return_trajectory``. Raises what :func:`odegrad.odeint` raises.

        A fixed-step odegrad method with ``gradient="direct"`` (no regularization while training,
        no ``check_backward``) steps through the block's times as Python floats and reads no
        tensor value, so ``torch.compile(block, fullgraph=True)`` captures forward and backward
        in one graph each (docs: torch.func and torch.compile)."""
        check_state("y0", y0)
        t = torch.tensor(self.times, dtype=y0.dtype, device=y0.device)
        regularize = self.regularizer is not None and self.training  # a training penalty: eval mode skips it
        self.regularization = None
        solver = get_solver(self.method)
        fixed_step = isinstance(solver, StepSolver) and not solver.error_estimate
        if fixed_step and self.gradient == "direct" and not regularize and y0.dtype in self._times_as:
            config = make_config(solver, self.rtol, self.atol, self.options, func=self.func, y0=y0, t=t)
            if not config.check_backward:
                ys = unroll(solver, self.func, y0, self.times_in(y0.dtype), config)
                return ys if self.return_trajectory else ys[-1]
        if not regularize:
            ys = odeint(self.func, y0, t, method=self.method, gradient=self.gradient, rtol=self.rtol,
                        atol=self.atol, options=self.options)
        else:
            solution = solve(self.func, y0, t, method=self.method, gradient=self.gradient, rtol=self.rtol,
                             atol=self.atol, options=self.options, regularization=self.regularizer)
            ys, self.regularization = solution.ys, solution.regularization
        return ys if self.return_trajectory else ys[-1]


class TLNODE(nn.Module):
    """Taylor-Lagrange neural ODE (Djeumou et al., 2022): ``y0 -> y(t0 + horizon)`` by ``steps``
    fixed Taylor steps of order ``order`` with a learned Lagrange remainder.

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, y)``, built from ops with a
            Taylor rule (``odegrad.jet.supported_ops()``) or differentiable by
            ``torch.func.jvp`` (``mode="jvp"``/``"auto"``).
        order: Taylor order p >= 1 (the paper uses p = 1).
        steps: number of fixed steps over the horizon (>= 1).
        horizon: integration time (> 0); Python float, so the graph is static.
        remainder: the midpoint network (e.g. ``LearnedMidpoint(dim)``) or None for the plain
            truncated Taylor series.
        mode: Taylor coefficient computation, see :class:`odegrad.solvers.Taylor`.
        gradient: ``"direct"`` (default) backpropagates through the steps and trains the remainder
            network. Any other backend goes through :func:`odegrad.odeint` with
            ``params = func params + remainder params``; adjoint-type backends integrate the
            continuous adjoint (backward method: fixed-step ``backward_method`` on the same grid,
            because the adjoint system holds ``torch.autograd.grad`` calls that have no Taylor
            expansion), and since the remainder is not part of the ODE its parameters then get zero
            gradients — train them with ``direct`` or with :meth:`remainder_loss`.
        backward_method: the fixed-step integrator adjoint-type backends (given by name) use for
            their backward solve.
        t0: start time.

    Attributes:
        nfe: evaluations of func over all forward passes so far (see :attr:`nfe`).
        forward_passes: ``Tensor[]`` (int64, a non-persistent buffer): forward passes so far.

    Compiling: ``torch.compile(model, fullgraph=True)`` (also ``mode="reduce-overhead"``) and a
    compiled training step (loss and its backward) trace one graph that is reused for every call
    of the same shapes: the pass counter is a buffer updated in place, not a Python int.

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]``. The forward pass is
    a fixed sequence of tensor ops (no ``.item()``, no branching on values), so ``torch.export`` /
    ONNX export produce one static graph with a dynamic batch dimension.
    """

    def __init__(self, func: nn.Module, *, order: int = 1, steps: int = 1, horizon: float = 1.0,
                 remainder: nn.Module | None = None, mode: str = "auto", gradient: str = "direct",
                 backward_method: str = "rk4", t0: float = 0.0):
        super().__init__()
        if not isinstance(func, nn.Module):
            raise InvalidInput("func", type(func).__name__, "an nn.Module vector field func(t, y)")
        check_int("steps", steps, low=1, high=MAX_TLNODE_STEPS)
        check_positive("horizon", horizon)
        check_in_range("t0", t0)
        self.func = func
        self.remainder = remainder
        self.solver = Taylor(order=order, remainder=remainder, mode=mode)
        self.order = self.solver.order
        self.steps = steps
        self.horizon = float(horizon)
        self.t0 = float(t0)
        self.gradient = gradient
        self.backward_method = backward_method
        self.register_buffer("forward_passes", torch.zeros((), dtype=torch.int64), persistent=False)

    @property
    def step_size(self) -> float:
        """Length of one Taylor step, ``horizon / steps``."""
        return self.horizon / self.steps

    def nfe_per_forward(self) -> int:
        """Evaluations of func (plain or jet) per forward pass in Taylor mode."""
        return self.steps * self.solver.nfe_per_step()

    @property
    def nfe(self) -> int:
        """Evaluations of func (plain or jet) over all forward passes so far:
        ``forward_passes × nfe_per_forward()`` (the cost is fixed, so counting passes is exact —
        and works unchanged under ``torch.compile``, where a Python counter would recompile)."""
        return int(self.forward_passes) * self.nfe_per_forward()

    def forward(self, y0: Tensor, t0: float | None = None) -> Tensor:
        """The state at ``start + horizon`` after ``steps`` Taylor steps from ``y0`` at ``start``
        (``t0`` if given, else the block's ``t0``); counts the pass in :attr:`forward_passes`.

        Raises:
            InvalidInput: y0 is not a floating-point tensor, its last dimension differs from the
                remainder network's ``dim``, or ``t0`` is not finite.
            NonFiniteValue: y0 holds NaN or Inf.
            UnsupportedCombination: see ``gradient`` and ``mode`` above.
        """
        check_state("y0", y0)
        # under torch.compile a start time may be symbolic (another block's horizon made it dynamic)
        start = self.t0 if t0 is None else t0 if is_tracing() else check_in_range("t0", t0)
        dim = getattr(self.remainder, "dim", None)
        if isinstance(dim, int) and y0.shape[-1:] != (dim,):
            raise InvalidInput("y0 shape", tuple(y0.shape), f"a last dimension of {dim} (the remainder network's dim)")
        if self.gradient == "direct":
            y = self.solver.rollout(CountedFunc(self.func), y0, start, self.step_size, self.steps)
        else:
            y = self._solve(y0, start).ys[-1]
        self.forward_passes.add_(1)
        return y

    def _solve(self, y0: Tensor, start: float):
        backend = get_backend(self.gradient)
        if isinstance(self.gradient, str) and isinstance(backend, AdjointBackend) and backend.method is None:
            backend = backend.with_method(self.backward_method)
        t = torch.tensor([start, start + self.horizon], dtype=y0.dtype, device=y0.device)
        params = [p for p in self.parameters() if p.requires_grad]
        return solve(self.func, y0, t, method=self.solver, gradient=backend,
                     options={"step_size": self.step_size}, params=params)

    def remainder_loss(self, y0: Tensor, rtol: float = 1e-6, atol: float = 1e-8) -> Tensor:
        """Mean squared error of one Taylor forward pass against a dopri5 solution of the current
        vector field (the reference code's periodic midpoint refit). Differentiable in the remainder
        network's parameters whatever ``gradient`` is — the way to train them alongside an
        adjoint-type backend. The target carries no gradient; the prediction also depends on the
        vector field, so step an optimiser over ``self.remainder.parameters()`` only.

        Shapes: ``y0: Tensor[*batch, *state]`` -> scalar.
        """
        if self.remainder is None:
            raise InvalidInput("remainder", None, "a remainder network to fit (TLNODE(..., remainder=...))")
        t = torch.tensor([self.t0, self.t0 + self.horizon], dtype=y0.dtype, device=y0.device)
        with torch.no_grad():
            target = odeint(self.func, y0, t, rtol=rtol, atol=atol)[-1]
        prediction = self.solver.rollout(CountedFunc(self.func), y0, self.t0, self.step_size, self.steps)
        return (prediction - target).pow(2).mean()

    def trajectory(self, y0: Tensor, intervals: int) -> Tensor:
        """States at ``t0 + i·horizon`` for ``i = 0..intervals``: ``Tensor[intervals + 1, *y0.shape]``."""
        check_int("intervals", intervals, low=0)
        ys = [check_state("y0", y0)]
        for i in range(intervals):
            ys.append(self(ys[-1], self.t0 + i * self.horizon))
        return torch.stack(ys)

