"""Turn a fixed-cost model into a trace-clean inference module, or refuse with a reason.

A :class:`~odegrad.models.NeuralODE` goes through :func:`odegrad.odeint`, which keeps its output
times in a tensor; a traced graph cannot read tensor values back, so each fixed-step NeuralODE
(the model itself or any submodule) is swapped for :class:`UnrolledNeuralODE`, which drives the
same solver through the shared loop with the times as Python floats. The steps unroll into one
static graph. Adaptive methods choose their step count from the data and are refused.

A user's own module that calls ``odegrad.odeint`` itself is handled by the solvers' hook
:class:`~odegrad.solvers.StaticTimes`: an eager pass reads each solve's output times once (see
``record_solves`` in ``_common``), and the traced pass unrolls them the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from odegrad import __version__
from odegrad.errors import ExportError, InvalidInput, MaxStepsExceeded, OdegradError
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import StaticSolve, StepSolver, fixed_grid, get_solver, make_config, require_unrollable, unroll

from ._adaptive import AdaptiveNeuralODE, loop_exportable

_FIXED_HINT = ("export a NeuralODE with a fixed-step method (euler, midpoint, heun, rk4) and "
               "options={'step_size': h} or {'grid': [...]}, or a TLNODE")


class UnrolledNeuralODE(nn.Module):
    """Inference-only twin of a fixed-step :class:`NeuralODE` sharing its vector field.

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]``, or
    ``Tensor[len(t), *batch, *state]`` when the block returns its trajectory.

    Args:
        block: the NeuralODE; its func is shared (not copied), its times and options are read once.

    Raises:
        ExportError: the block's method is adaptive or not an odegrad step solver, or its fixed
            grid needs more than ``max_steps`` steps.
    """

    def __init__(self, block: NeuralODE):
        super().__init__()
        solver = _fixed_step_solver(block)
        self.func = block.func
        self.solver = solver
        self.times = list(block.times)
        self.times_in = block.times_in
        self.config = make_config(solver, block.rtol, block.atol, block.options)
        self.return_trajectory = block.return_trajectory
        try:
            self.steps = len(fixed_grid(self.times, self.config)) - 1
        except MaxStepsExceeded as error:
            raise ExportError(f"cannot export this NeuralODE: {error}") from None

    def forward(self, y0: Tensor) -> Tensor:
        """The block's output for ``y0``: the state at the last time, or the whole trajectory."""
        ys = unroll(self.solver, self.func, y0, self.times_in(y0.dtype), self.config)
        return ys if self.return_trajectory else ys[-1]


def _fixed_step_solver(block: NeuralODE) -> StepSolver:
    solver = get_solver(block.method)
    return require_unrollable(solver, f"NeuralODE(method={getattr(solver, 'name', block.method)!r})",
                              _FIXED_HINT, " (to_onnx exports adaptive methods such as dopri5 as an ONNX Loop)")


@dataclass
class GraphInfo:
    """What was exported: recorded as metadata in the ONNX/TorchScript file.

    Attributes:
        kind: ``"neural_ode"``, ``"tlnode"``, ``"module"`` (no ODE block), or the kinds of
            several blocks joined with ``+``.
        method: integrator name (``""`` when there is none).
        order: method order (the largest one for several blocks).
        steps: number of steps unrolled (summed over blocks).
        extra: further ``odegrad.<key>`` entries (e.g. TL-NODE's horizon and remainder).
    """

    kind: str
    method: str = ""
    order: int | None = None
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, str]:
        """The info as ``odegrad.<key>`` string entries, with the odegrad version."""
        meta = {"odegrad.version": __version__, "odegrad.kind": self.kind}
        if self.method:
            meta["odegrad.method"] = self.method
        if self.order is not None:
            meta["odegrad.order"] = str(self.order)
        if self.steps is not None:
            meta["odegrad.steps"] = str(self.steps)
        meta.update({f"odegrad.{k}": str(v) for k, v in self.extra.items()})
        return meta


class RolledOutTLNODE(nn.Module):
    """Inference twin of a :class:`~odegrad.models.TLNODE`: its fixed Taylor steps as plain tensor
    ops, whatever gradient backend the block trains with (other backends go through odeint).

    Shapes: ``forward(y0: Tensor[*batch, *state]) -> Tensor[*batch, *state]``.

    Args:
        block: the TLNODE; its func, remainder and solver are shared, not copied.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.func = block.func
        self.remainder = block.remainder
        self.solver = block.solver
        self.t0, self.step_size, self.steps = block.t0, block.step_size, block.steps

    def forward(self, y0: Tensor) -> Tensor:
        """The state after the block's fixed Taylor steps from ``y0``."""
        return self.solver.rollout(self.func, y0, self.t0, self.step_size, self.steps)


def _is_ode_block(module: nn.Module) -> bool:
    return isinstance(module, (NeuralODE, TLNODE))


def _unrolled(block: nn.Module, adaptive: bool) -> nn.Module:
    if adaptive and loop_exportable(block):
        return AdaptiveNeuralODE(block)
    return UnrolledNeuralODE(block) if isinstance(block, NeuralODE) else RolledOutTLNODE(block)


def _describe_block(block: nn.Module) -> GraphInfo:
    if loop_exportable(block):
        loop = AdaptiveNeuralODE(block)
        return GraphInfo("neural_ode", method=loop.solver.name, order=loop.solver.order,
                         extra={"step_control": "loop", "max_steps": loop.config.max_steps})
    if isinstance(block, NeuralODE):
        unrolled = UnrolledNeuralODE(block)
        return GraphInfo("neural_ode", method=unrolled.solver.name, order=unrolled.solver.order,
                         steps=unrolled.steps)
    remainder = "none" if block.remainder is None else type(block.remainder).__name__
    return GraphInfo("tlnode", method="taylor", order=block.order, steps=block.steps,
                     extra={"horizon": block.horizon, "remainder": remainder, "taylor_mode": block.solver.mode})


def describe(model: nn.Module) -> GraphInfo:
    """Kind, method, order and step count of the ODE blocks in ``model`` (joined when several)."""
    return _joined([_describe_block(m) for m in model.modules() if _is_ode_block(m)])


def with_solves(info: GraphInfo, solves: list[StaticSolve]) -> GraphInfo:
    """``info`` joined with the ``odeint`` solves recorded in a user's module (kind ``"odeint"``)."""
    recorded = [GraphInfo("odeint", method=s.method, order=s.order, steps=s.steps) for s in solves]
    return _joined(([] if info.kind == "module" else [info]) + recorded)


def _joined(infos: list[GraphInfo]) -> GraphInfo:
    if not infos:
        return GraphInfo("module")
    if len(infos) == 1:
        return infos[0]
    steps = [i.steps for i in infos]
    orders = [i.order for i in infos if i.order is not None]
    return GraphInfo("+".join(i.kind for i in infos), method="+".join(i.method for i in infos),
                     order=max(orders) if orders else None, steps=sum(steps) if None not in steps else None,
                     extra={"blocks": sum(i.extra.get("blocks", 1) for i in infos)})


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's training flag on exit."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)


@contextlib.contextmanager
def inference_module(model: nn.Module, *, adaptive: bool = False) -> Iterator[nn.Module]:
    """Yield a trace-clean module computing ``model`` in eval mode; restores ``model`` on exit.

    Every fixed-step NeuralODE in ``model`` is swapped for an :class:`UnrolledNeuralODE` and every
    TLNODE for a :class:`RolledOutTLNODE` (the model itself when it is one); adaptive blocks raise
    :class:`ExportError` before anything changes, unless ``adaptive`` (the ONNX exporter, which
    lowers the loop to an ONNX ``Loop``) swaps dopri5/tsit5/bosh3 blocks for an
    :class:`~odegrad.export._adaptive.AdaptiveNeuralODE`.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInput("model", type(model).__name__, "a torch.nn.Module")
    blocks = [(name, m) for name, m in model.named_modules() if _is_ode_block(m)]
    replacements = [(name, block, _unrolled(block, adaptive)) for name, block in blocks]
    root = next((unrolled for name, _, unrolled in replacements if not name), model)
    with eval_mode(model):
        try:
            for name, _, unrolled in replacements:
                if name:
                    _replace(model, name, unrolled)
            root.eval()
            yield root
        finally:
            for name, block, _ in replacements:
                if name:
                    _replace(model, name, block)


def check_example(example_input: Any, dynamic_batch: bool) -> Tensor:
    """The example input must be one floating-point tensor (with a batch dimension if dynamic)."""
    if not isinstance(example_input, Tensor):
        raise InvalidInput("example_input", type(example_input).__name__,
                           "one torch.Tensor shaped like the model input, e.g. Tensor[batch, state]")
    if not example_input.is_floating_point():
        raise InvalidInput("example_input dtype", str(example_input.dtype), "a floating-point dtype")
    if dynamic_batch and example_input.dim() == 0:
        raise InvalidInput("example_input shape", "() (a scalar)",
                           "a leading batch dimension when dynamic_batch=True")
    if example_input.numel() == 0:
        raise InvalidInput("example_input shape", str(tuple(example_input.shape)), "a non-empty tensor")
    if not bool(torch.isfinite(example_input).all()):
        raise InvalidInput("example_input", "a tensor with NaN/Inf", "finite values")
    return example_input.detach()


def trace_example(example: Tensor, dynamic_batch: bool) -> Tensor:
    """Tracers specialise a size-1 dimension to the constant 1, so trace a batch of at least 2."""
    if dynamic_batch and example.shape[0] == 1:
        return example.expand(2, *example.shape[1:]).clone()
    return example


def batch_dims(dynamic_batch: bool) -> tuple[dict[int, Any], ...] | None:
    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


def export_program(module: nn.Module, example: Tensor, dynamic_batch: bool) -> torch.export.ExportedProgram:
    """``torch.export`` the module, turning failures (data-dependent control flow, unsupported
    operations, a batch size baked into the graph) into an :class:`ExportError` saying why."""
    try:
        with torch.no_grad():
            return torch.export.export(module, (example,), dynamic_shapes=batch_dims(dynamic_batch))
    except OdegradError:
        raise
    except Exception as error:  # torch raises many unrelated types here; all mean "not exportable"
        raise ExportError(_explain(error)) from error


def _explain(error: Exception) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if "data-dependent" in text or "GuardOnDataDependent" in type(error).__name__:
        return ("the model has data-dependent control flow (a Python branch, loop bound or .item() "
                f"on tensor values), which a static graph cannot represent: {first}. Use torch.where "
                f"instead of branching on values, and for ODE blocks {_FIXED_HINT}")
    if "batch" in text and ("specialized" in text or "constant" in text or "Constraints violated" in text):
        return (f"the model fixes the batch size in its graph ({first}); avoid reshaping with a "
                "Python int taken from the input shape (torch.func transforms such as TLNODE(mode='jvp') "
                "do this; use mode='taylor'), or export with dynamic_batch=False")
    return f"torch.export could not capture the model as one static graph: {type(error).__name__}: {first}"

