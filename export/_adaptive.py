"""Adaptive solves as one graph for export: an adaptive :class:`NeuralODE` block runs on
odegrad's traced driver (:func:`odegrad.solvers.integrate_traced`, a ``torch.while_loop`` that
the dynamo ONNX exporter lowers to an ONNX ``Loop``): the same step solver, controller, first
step and dense output as the eager solve, so the exported loop takes eager's steps.

Where the eager solve raises (``max_steps`` reached, a non-finite error ratio, a step size that no
longer moves ``t``) the loop stops and the output times it did not reach are NaN.
"""

from __future__ import annotations

from torch import Tensor, nn

from odegrad.errors import ExportError
from odegrad.models import NeuralODE
from odegrad.solvers import (
    StepSolver,
    exact_constants,
    get_solver,
    integrate_traced,
    make_config,
    traced_constants,
    traced_unsupported,
)


def loop_exportable(block: nn.Module) -> bool:
    """Whether ``block`` is a :class:`NeuralODE` with an adaptive odegrad step solver."""
    if not isinstance(block, NeuralODE):
        return False
    solver = get_solver(block.method)
    return isinstance(solver, StepSolver) and solver.error_estimate


class AdaptiveNeuralODE(nn.Module):
    """Inference twin of an adaptive :class:`NeuralODE` (any adaptive odegrad step solver: dopri5,
    tsit5, bosh3, a tableau of your own) whose solve is the traced driver's while loop, sharing the
    block's func.

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]``, or
    ``Tensor[len(t), *batch, *state]`` when the block returns its trajectory; with
    ``with_counts`` also the accepted and rejected step counts (int64 scalars).

    Args:
        block: the NeuralODE; its func is shared, its times, tolerances and options read once.
        with_counts: also return ``(accepted, rejected)`` step counts (for checking that the
            exported loop takes the same steps as the eager solve).

    Raises:
        ExportError: the method is not an adaptive odegrad step solver, or the options ask for
            something the traced loop does not do (``jump_t``, ``perturb``).
    """

    def __init__(self, block: NeuralODE, *, with_counts: bool = False):
        super().__init__()
        if not loop_exportable(block):
            raise ExportError(f"cannot export NeuralODE(method={block.method!r}) as an adaptive loop: "
                              "supported methods are the adaptive odegrad step solvers (dopri5, tsit5, bosh3, "
                              "an ExplicitRK of an embedded tableau)")
        self.solver = get_solver(block.method)
        self.config = make_config(self.solver, block.rtol, block.atol, block.options)
        unsupported = traced_unsupported(self.solver, self.config, keep_dense=False)
        if unsupported:
            raise ExportError(f"cannot export this adaptive NeuralODE: options {unsupported} are not "
                              "supported in the exported loop; drop them, or use a fixed-step method "
                              "(euler, midpoint, heun, rk4) with options={'step_size': h}")
        self.func = block.func
        self.times_in = block.times_in
        self.return_trajectory = block.return_trajectory
        self.with_counts = with_counts
        self.constants = traced_constants(self.solver, self.config)

    def forward(self, y0: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """The block's output for ``y0`` (the state at the last time, or the whole trajectory),
        with the accepted/rejected step counts when ``with_counts``."""
        t = y0.new_tensor(self.times_in(y0.dtype))
        with exact_constants(self.constants, device=y0.device):
            solution = integrate_traced(self.solver, self.func, y0, t, self.config, raise_on_failure=False)
        ys = solution.ys if self.return_trajectory else solution.ys[-1]
        if not self.with_counts:
            return ys
        return ys, solution.stats.steps_accepted, solution.stats.steps_rejected
