"""``gradient="interp"``: the interpolated reverse dynamic method, IRDM (Daulbaev et al., NeurIPS 2020).

Forward: one ordinary solve without a graph; the state is stored at Chebyshev points of the first
kind of every observation segment [t_{i-1}, t_i], read off the forward solver's dense output (or,
for integrators without one, requested as extra output times, which never shorten steps).
Backward: y(t) is rebuilt by barycentric Lagrange interpolation and only

    da/dt = −aᵀ ∂f/∂y,   dg/dt = −aᵀ ∂f/∂θ,   g(T) = 0  ⇒  g(t0) = dL/dθ

is integrated backwards, adding dL/dy_i to a at each observation time. There is no reverse solve
of y, so the backward pass cannot drift off the forward trajectory the way the classic adjoint
does on dissipative systems (where y(t) is unstable backwards in time).

Nodes per segment rather than one set over [t0, T] (the reference supports t = [t0, T] only):
the backward solve runs segment by segment anyway (a jumps by dL/dy_i at every observation), the
segment ends are known exactly (the stored ys), each segment gets the node count its own dynamics
need instead of the count the hardest part of the span needs, and the cost of one evaluation of
the interpolant grows with n. A segment whose trajectory is too complex for ``max_nodes`` points is
split in halves (piecewise Chebyshev) up to ``max_pieces`` pieces.

Accuracy rule: an interpolant is accepted only if it matches the forward solution at held-out
points — the n + 1 second-kind Chebyshev points, which interleave the n nodes — to the check
tolerances; otherwise n doubles, then the segment splits, and when that budget is spent an
:class:`~odegrad.errors.InterpolationError` is raised (or a warning, with ``on_failure="warn"``).

Backward steps: no backward step of an adaptive integrator passes the end of its segment (the
segment end is a forced stop, ``config.controller.stops``: of odegrad's step controller, or torchdiffeq's
``step_t`` through the adapter), and each segment starts with the step size the previous one
proposed (the first with the forward's last step), so stages read y(t) only where it was checked
and no step-size heuristic is paid per segment. An integrator that ignores the stops and steps
past the end reads the neighbouring segment's interpolant, or extrapolates the first piece
slightly beyond t0.

Memory: the forward solve's stages live only for a window of accepted steps (``window``) while
its pieces are fitted; the backward pass keeps the node values, Σ n · |y|, up to ``node_memory``
bytes — beyond it the oldest stretches keep only their start state (one |y| each) and are solved
again and refitted when the backward pass reaches them. Memory therefore still grows with the
horizon, by one state per checkpointed stretch, much more slowly than the node values would.
"""

from __future__ import annotations

import bisect
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_non_negative
from ..errors import InterpolationError, InvalidInput
from ..solvers import AcceptedStep, CountedFunc, IntegrationConfig, JacobianStructure, Solution, TimeAxis, fixed_grid
from ._barycentric import ChebyshevInterpolant, chebyshev_extrema, to_interval
from ._base import (
    AdjointBackend,
    BlockNorm,
    Problem,
    adjoint_state_bytes,
    flat_cat,
    func_vjp,
    same_steps_config,
    split_like,
)
from ._per_entry_chebyshev import PerEntryChebyshev
from ._per_sample import per_sample_backward, solve_keeping_steps
from ._traced_adjoint import TRACED_NODES, Sweep, traced_adjoint, traces_backward

BACKWARD_TOLERANCE_DIVISOR = 10.0
BACKWARD_RTOL_ULPS = 10.0
"""The default backward rtol is not set below this many machine epsilons of the state dtype (nor
above the forward rtol): finer control buys steps, not accuracy. On the float32 MLP at T = 50
(rtol 1e-6) the backward rtols 1e-7 and 1.2e-6 gave the same gradient error (1.1e-6) with 307 and
217 backward evaluations."""
_FIXED_STEP_CHECK_RTOL = 1e-4
_FIXED_STEP_CHECK_ATOL = 1e-6




class _StepWindows:
    """The observer (``IntegrationConfig.observers``) of the forward solve (integrators with dense output):
    keeps the accepted steps not yet covered by fitted pieces — each step's end and interpolant
    ``at`` — and fits pieces as the solve goes: an observation segment when its end is reached,
    and a piece of a long segment whenever ``backend.window`` steps have gathered; the steps
    behind the fitted end are then dropped. So the stages of at most ``window`` steps are alive
    at once instead of the whole dense output, and the pieces of one segment start their node
    count at the count the previous piece needed. When the stored node values pass
    ``node_memory`` bytes (None: never), the oldest stretches fitted by one call are replaced by
    checkpoints (their start state, ``y0`` for the first, and the size of the step the forward solve
    took there). Also the sampler of those fits (no
    function evaluations)."""

    nfe = 0

    def __init__(self, backend: Interpolation, times: list[float], rtol: float, atol: float,
                 trajectory: Trajectory, y0: Tensor, node_memory: int | None):
        self.backend, self.times, self.rtol, self.atol = backend, times, rtol, atol
        self.trajectory = trajectory
        self.axis = trajectory.axis
        self.segment, self.start, self.first_count = 0, times[0], None
        self.budget = [backend.max_pieces - 1]  # splits still allowed in this segment
        self.ends: list[float] = []
        self.steps: list = []
        self.node_memory, self.state, self.step, self.stored = node_memory, y0, None, 0
        # (pieces, bytes, start state, step there) of the stretches not checkpointed, oldest first
        self.stretches: deque[tuple[int, int, Tensor, float | None]] = deque()
        self.checkpoints = 0

    def __call__(self, step: AcceptedStep) -> None:
        t1 = step.t1
        self.ends.append(self.axis.along(t1))
        self.steps.append(step.at)
        self.last_step = abs(t1 - step.t0)
        while self.segment < len(self.times) - 1 and not self.axis.before(t1, self.times[self.segment + 1]):
            self._fit(self.times[self.segment + 1])
            self.segment, self.first_count = self.segment + 1, None
            self.budget = [self.backend.max_pieces - 1]
        if len(self.steps) >= self.backend.window and self.axis.before(self.start, t1):
            self._fit(t1)

    def _fit(self, end: float) -> None:
        pieces = self.trajectory.pieces
        before = len(pieces)
        self.backend._fit_piece(self, self.segment, self.start, end, self.rtol, self.atol, self.budget,
                                self.trajectory, self.first_count)
        self.start, self.first_count = end, pieces[-1].n
        if self.node_memory is not None:
            size = sum(piece.values.nbytes for piece in pieces[before:])
            self.stretches.append((len(pieces) - before, size, self.state, self.step))
            self.stored += size
            self.state, self.step = self.sample(self.segment, [end])[0], self.last_step
            while self.stored > self.node_memory and self.stretches:
                count, size, state, step = self.stretches.popleft()
                self.trajectory.checkpoint(self.checkpoints, self.checkpoints + count, state, step)
                self.checkpoints += 1
                self.stored -= size
        done = bisect.bisect_right(self.ends, self.axis.along(end))
        del self.ends[:done], self.steps[:done]

    def sample(self, segment: int, times: list[float]) -> Tensor:
        """The forward solution at ``times`` (inside the kept steps), ``Tensor[len(times), *shape]``."""
        last, out = len(self.steps) - 1, None
        for i, x in enumerate(times):
            value = self.steps[min(bisect.bisect_left(self.ends, self.axis.along(x)), last)](x)
            if out is None:  # filled in place: a stack would hold every sample twice
                out = value.new_empty((len(times), *value.shape))
            out[i] = value
        return out


class _ResolveSampler:
    """Samples of the forward solution for integrators without dense output.

    Adaptive methods interpolate output times inside their steps (they never shorten a step), so
    the forward solve's extra output times give the first try of every segment for free. A
    segment that needs other times is re-solved from the stored y_{i-1}; from then on all its
    samples come from re-solves (whose steps do not depend on the output times, so they agree
    with each other), never mixed with the forward solve's values: the two differ by the
    solver's error, which the held-out check would take for interpolation error.
    Fixed-step methods may interpolate output times only linearly (torchdiffeq), so their values
    come from one shortened step from the preceding grid point (a continuous extension of the
    method's own order). Both kinds of extra solve count in ``nfe``."""

    def __init__(self, problem: Problem, cache: dict[float, Tensor], grid: list[float] | None):
        self.problem = problem
        self.times = problem.t.tolist()
        self.axis = TimeAxis.of(self.times[0], self.times[-1])
        self.cache = cache
        self.grid = grid
        self.resolved: dict[int, dict[float, Tensor]] = {}
        self.nfe = 0

    def sample(self, segment: int, times: list[float]) -> Tensor:
        keys = as_times(self.problem.t, times)
        if self.grid is not None:
            return self._shortened_steps(keys)
        values = self.resolved.get(segment)
        if values is None:
            if all(x in self.cache for x in keys):
                return torch.stack([self.cache[x] for x in keys])
            a = self.times[segment]
            values = self.resolved[segment] = {a: self.cache[a]}
        missing = self.axis.ordered(set(keys) - set(values))
        if missing:
            a, b = self.times[segment], self.times[segment + 1]
            self._solve(values, a, [x for x in missing if x != b] + [b], self.problem.config)
        return torch.stack([values[x] for x in keys])

    def _shortened_steps(self, keys: list[float]) -> Tensor:
        order = [self.axis.along(g) for g in self.grid]
        for x in self.axis.ordered(set(keys) - set(self.cache)):
            start = self.grid[max(bisect.bisect_right(order, self.axis.along(x)) - 1, 0)]
            config = replace(self.problem.config, grid=[start, x], step_size=None)
            self._solve(self.cache, start, [x], config)
        return torch.stack([self.cache[x] for x in keys])

    def _solve(self, values: dict[float, Tensor], start: float, times: list[float],
               config: IntegrationConfig) -> None:
        p = self.problem
        sol = p.solver.integrate(p.func, values[start], p.t.new_tensor([start, *times]), config)
        self.nfe += sol.stats.nfe_forward
        values.update(zip(times, sol.ys[1:]))


def as_times(like: Tensor, values: list[float]) -> list[float]:
    """``values`` rounded to the dtype of the user's t, as the integrator will see them (float32
    times would otherwise collide or reorder once rounded)."""
    return like.new_tensor(values).tolist()


@dataclass
class Checkpoint:
    """A stretch ``[a, b]`` of the forward solve whose pieces were dropped to keep the stored nodes
    within :class:`Interpolation`'s ``node_memory``: the state ``y`` at ``a``
    (``Tensor[*y0.shape]``), from which the backward pass solves ``[a, b]`` again and refits it,
    starting with the forward's ``step`` there (adaptive methods)."""

    a: float
    b: float
    y: Tensor
    step: float | None = None


@dataclass
class Trajectory:
    """y(t) over the whole forward span: Chebyshev interpolants on consecutive pieces (one or more
    per observation segment), in the order of the forward solve; some stretches may be
    :class:`Checkpoint` s, rebuilt by ``refit(checkpoint) -> Trajectory`` when first read (two
    rebuilt stretches are kept: the backward pass reads them in order, but a step across the
    border between two, rejected and retried, reads both again).

    ``starts[k]`` is where piece k begins, along the solve (``axis``). A call takes a time
    (float or 0-d tensor) and returns ``Tensor[*y0.shape]``. Times in a neighbouring segment (a backward step
    may overshoot its segment end) are read from that segment's piece; times beyond t0 or T
    extrapolate the end pieces. ``step_hint``: size of the forward solve's last accepted step,
    the first step of the backward solve (None: the integrator's own heuristic)."""

    axis: TimeAxis
    step_hint: float | None = None
    pieces: list[ChebyshevInterpolant | Checkpoint] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    refit: Callable[[Checkpoint], Trajectory] | None = None
    refit_nfe: int = 0
    _rebuilt: OrderedDict[int, Trajectory] = field(default_factory=OrderedDict)

    def add(self, piece: ChebyshevInterpolant) -> None:
        self.pieces.append(piece)
        self.starts.append(self.axis.along(piece.a))

    def checkpoint(self, first: int, end: int, state: Tensor, step: float | None) -> None:
        """Replace pieces ``first`` to ``end - 1`` by a :class:`Checkpoint` from ``state``."""
        self.pieces[first:end] = [Checkpoint(self.pieces[first].a, self.pieces[end - 1].b, state, step)]
        self.starts[first:end] = [self.starts[first]]

    def __call__(self, t: float | Tensor) -> Tensor:
        index = 0 if len(self.pieces) == 1 else max(
            bisect.bisect_right(self.starts, self.axis.along(float(t))) - 1, 0)
        piece = self.pieces[index]
        if isinstance(piece, Checkpoint):
            if index in self._rebuilt:
                self._rebuilt.move_to_end(index)
            else:
                if len(self._rebuilt) == 2:  # free the least recently read stretch before rebuilding this one
                    self._rebuilt.popitem(last=False)
                self._rebuilt[index] = self.refit(piece)
            piece = self._rebuilt[index]
        return piece(t)

    @property
    def nodes(self) -> int:
        """Stored states: Chebyshev nodes over all pieces (checkpoints count one)."""
        return sum(piece.n if isinstance(piece, ChebyshevInterpolant) else 1 for piece in self.pieces)


class _AdjointSystem:
    """The backward system d[a, g]/dt = [−aᵀ∂f/∂y, −aᵀ∂f/∂θ] with y(t) from the trajectory
    interpolant, state flat ``Tensor[|y| + |θ|]``. Called with the step loop's float64 stage
    times (see :class:`_HostTimes`), so the interpolant is evaluated at the exact stage time even
    when the user's t is float32; the user's func gets the time in the dtype of their t."""

    def __init__(self, problem: Problem, trajectory: Trajectory):
        self.func = problem.func
        self.time_dtype = problem.t.dtype
        self.trajectory = trajectory
        self.params = problem.params
        self.shape, self.size = problem.y0.shape, problem.y0.numel()
        # implicit methods: Jacobian by finite differences (func_vjp), over a only (g is a quadrature tail)
        self.jacobian_structure = JacobianStructure(implicit_size=self.size)

    def __call__(self, t: float | Tensor, state: Tensor) -> Tensor:
        y = self.trajectory(t)
        a = state[:self.size].view(self.shape)
        # a fill, not torch.tensor: no host-to-device copy (which blocks the host on CUDA)
        t = t.to(self.time_dtype) if isinstance(t, Tensor) else torch.full((), t, dtype=self.time_dtype,
                                                                            device=state.device)
        _, vjp_y, vjp_params = func_vjp(self.func, t, y, a, self.params)
        return torch.cat([-vjp_y.reshape(-1), -flat_cat(vjp_params, state)])


class _HostTimes(CountedFunc):
    """Counts the adjoint system's evaluations and passes the step loop's float times through
    unconverted: the interpolant then builds its barycentric basis from a host float (a few
    device operations, instead of a dozen on a time tensor and, on a GPU, a device-to-host read
    to choose the piece). Tensor times (nudged times at jumps, other integrators) go the
    ordinary way."""

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        if not isinstance(t, float):
            return super().forward(t, y)
        if not torch.compiler.is_compiling():
            self.nfe += 1
        return self.func(t, y)


NODE_MEMORY_STATES = 32
"""Default budget of interp's stored node values, in copies of the classic adjoint's augmented
state [y, a, θ] (see ``Interpolation(node_memory=...)``): generous, since every checkpointed
stretch is solved again in the backward pass."""
HELD_OUT_CHUNK = 8
"""Held-out points compared at once: the check's temporaries are a few states per point, so
comparing all of a long piece's (up to 65) points together would cost more memory than its nodes."""


def _held_out_error(piece: ChebyshevInterpolant, times: list[float], exact: Tensor, rtol: float,
                    atol: float) -> float:
    """Largest |piece(t) − exact| / (atol + rtol·|value|) over the held-out ``times`` (values
    ``exact``, ``Tensor[len(times), *shape]``). Tolerances are floored at 64 ulps of the state
    dtype (atol: of the largest |value|): float32 samples, taken at float32-rounded times, cannot
    agree more closely than that, and no node count or split would change it."""
    eps = torch.finfo(exact.dtype).eps
    rtol = max(rtol, 64 * eps)
    atol = max(atol, 64 * eps * float(torch.linalg.vector_norm(exact, ord=float("inf"))))
    errors = []
    for start in range(0, len(times), HELD_OUT_CHUNK):
        chunk = slice(start, start + HELD_OUT_CHUNK)
        approx = piece(torch.tensor(times[chunk], dtype=torch.float64))
        scale = torch.maximum(exact[chunk].abs(), approx.abs()).mul_(rtol).add_(atol)
        errors.append(approx.sub_(exact[chunk]).abs_().div_(scale).max())
    return float(torch.stack(errors).max())


class Interpolation(AdjointBackend):
    """Interpolation adjoint (IRDM): the backward pass reads y(t) from Chebyshev interpolants of
    the forward trajectory and solves only the adjoint and the parameter-gradient integral.

    Args:
        nodes: Chebyshev nodes per piece; None chooses automatically (``min_nodes``, doubled up to
            ``max_nodes`` until the held-out check passes).
        min_nodes, max_nodes: range of the automatic rule.
        max_pieces: most pieces the held-out check may split one observation segment into
            (1: never split), besides the pieces of ``window`` steps a long segment is cut into.
        window: most forward steps whose stages are kept before a piece is fitted to them
            (integrators with dense output): the forward pass then holds about
            ``window · (stages + 2) · |y|`` of step data, not the whole dense output. Later
            pieces of a segment start at the node count the previous piece needed.
        node_memory: bytes the stored node values may take (integrators with dense output).
            Beyond it the oldest stretches (the pieces of one fit) keep only their start state
            and are solved again and refitted when the backward pass reaches them (one at a
            time): memory stays bounded on long horizons for one more forward solve of those
            stretches. None: :data:`NODE_MEMORY_STATES` (32) copies of the classic adjoint's
            state [y, a, θ], at least 256 KiB.
        check_rtol, check_atol: tolerances of the held-out check, |p − y| ≤ atol + rtol·|y| at
            every held-out point and state entry. None: 10× the forward rtol/atol for adaptive
            methods; 1e-4 / 1e-6 for fixed-step methods (they carry no tolerance of their own).
        on_failure: ``"raise"`` an InterpolationError or ``"warn"`` and go on with the most
            accurate interpolant found, when the check cannot be met.
        seminorm: leave the parameter-gradient integral out of the backward error norm
            (Kidger, Chen & Lyons 2021).
        rtol, atol: backward-solve tolerances. Default: the forward ones divided by
            ``BACKWARD_TOLERANCE_DIVISOR`` (10), the rtol no lower than ``BACKWARD_RTOL_ULPS``
            (10) epsilons of the state dtype unless the forward one is. Only [a, g] drive the
            backward step size here, not the O(1) state y as in the classic adjoint, so at equal
            tolerances the backward solve takes fewer, larger steps and its error can exceed the
            forward error; 10x tighter keeps the gradient error at or below torchdiffeq's adjoint
            in benchmarks/bench_adjoint.py and still leaves fewer backward steps.
        method: backward-solve integrator (default: the forward one).
    """

    name = "interp"
    seminorm_option = True

    def __init__(self, nodes: int | None = None, *, min_nodes: int = 4, max_nodes: int = 64,
                 max_pieces: int = 64, window: int = 8, node_memory: int | None = None,
                 check_rtol: float | None = None,
                 check_atol: float | None = None, on_failure: str = "raise",
                 seminorm: bool = False, rtol: float | None = None, atol: float | None = None,
                 method=None):
        super().__init__(rtol=rtol, atol=atol, method=method)
        for name, value in (("nodes", nodes), ("min_nodes", min_nodes), ("max_nodes", max_nodes),
                            ("max_pieces", max_pieces), ("window", window), ("node_memory", node_memory)):
            if value is not None:
                check_int(f"Interpolation {name}", value, low=2 if "nodes" in name else 1)
        if min_nodes > max_nodes:
            raise InvalidInput("Interpolation min_nodes", min_nodes,
                               f"at most max_nodes={max_nodes}")
        for name, value in (("check_rtol", check_rtol), ("check_atol", check_atol)):
            if value is not None:
                check_non_negative(f"Interpolation {name}", value)
        check_choice("Interpolation on_failure", on_failure, ("raise", "warn"))
        self.nodes = nodes
        self.min_nodes, self.max_nodes, self.max_pieces = min_nodes, max_nodes, max_pieces
        self.window, self.node_memory = window, node_memory
        self.check_rtol, self.check_atol = check_rtol, check_atol
        self.on_failure = on_failure
        self.seminorm = bool(seminorm)

    def __repr__(self) -> str:
        return (f"Interpolation(nodes={self.nodes}, max_nodes={self.max_nodes}, "
                f"max_pieces={self.max_pieces}, window={self.window}, node_memory={self.node_memory}, "
                f"seminorm={self.seminorm})")

    # ---- forward ---------------------------------------------------------------------------

    def node_counts(self) -> list[int]:
        """Node counts tried on one piece, in order."""
        if self.nodes is not None:
            return [self.nodes]
        counts, n = [], self.min_nodes
        while n < self.max_nodes:
            counts.append(n)
            n *= 2
        return [*counts, self.max_nodes]

    def backward_config(self, problem: Problem, **changes) -> IntegrationConfig:
        """The forward config with the backward tolerances (``rtol``/``atol``, default the forward
        ones divided by ``BACKWARD_TOLERANCE_DIVISOR``, the rtol floored as the class doc says)
        and ``changes`` applied."""
        forward_rtol, forward_atol = problem.config.controller.scalar_tolerances()
        floor = min(forward_rtol, BACKWARD_RTOL_ULPS * torch.finfo(problem.y0.dtype).eps)
        rtol = max(forward_rtol / BACKWARD_TOLERANCE_DIVISOR, floor) if self.rtol is None else self.rtol
        atol = forward_atol / BACKWARD_TOLERANCE_DIVISOR if self.atol is None else self.atol
        return problem.config.for_backward(rtol, atol).with_controller(**changes)

    def check_tolerances(self, problem: Problem) -> tuple[float, float]:
        """``(rtol, atol)`` of the held-out check for ``problem`` (see ``check_rtol``/``check_atol``)."""
        if problem.solver.error_estimate:
            rtol, atol = (10 * tolerance for tolerance in problem.config.controller.scalar_tolerances())
        else:
            rtol, atol = _FIXED_STEP_CHECK_RTOL, _FIXED_STEP_CHECK_ATOL
        return (rtol if self.check_rtol is None else self.check_rtol,
                atol if self.check_atol is None else self.check_atol)

    def forward_pass(self, problem: Problem) -> tuple[Solution, Trajectory]:
        """Solve forward (with dense output, or else at the nodes) and fit Chebyshev pieces to
        every segment; the context is the fitted trajectory.

        Raises:
            InterpolationError: a piece misses the held-out check with ``on_failure="raise"``.
        """
        if problem.t.dim() == 2:  # per sample: Chebyshev interpolants per entry and segment
            solution, sample = solve_keeping_steps(problem)
            rtol, atol = self.check_tolerances(problem)
            return solution, PerEntryChebyshev.fit(sample, problem.t, self.node_counts(), rtol, atol, self.on_failure)
        times = problem.t.tolist()
        trajectory = Trajectory(axis=TimeAxis.of(times[0], times[-1]))
        rtol, atol = self.check_tolerances(problem)
        if problem.solver.has_dense_output:
            budget = self.node_memory or adjoint_state_bytes(problem.y0, problem.params, NODE_MEMORY_STATES)
            windows = _StepWindows(self, times, rtol, atol, trajectory, problem.y0.detach(), budget)
            solution = problem.solver.integrate(problem.func, problem.y0, problem.t,
                                                problem.config.with_observer(windows),
                                                keep_dense=problem.keep_dense)
            trajectory.refit = partial(self._refit, problem, rtol, atol, trajectory)
        else:
            solution, sampler = self._solve_at_nodes(problem)
            for i in range(len(times) - 1):
                budget = [self.max_pieces - 1]  # splits still allowed in this segment
                self._fit_piece(sampler, i, times[i], times[i + 1], rtol, atol, budget, trajectory)
            solution.stats.nfe_forward += sampler.nfe
        if solution.steps is not None and len(solution.steps.h):
            trajectory.step_hint = float(solution.steps.h[-1])
        return solution, trajectory

    def _refit(self, problem: Problem, rtol: float, atol: float, trajectory: Trajectory,
               checkpoint: Checkpoint) -> Trajectory:
        """Solve the checkpointed stretch again from its start state (the forward's steps for
        fixed-step methods, the same tolerances for adaptive ones) and fit its pieces; the
        evaluations are added to ``trajectory.refit_nfe``."""
        part = Trajectory(axis=trajectory.axis)
        windows = _StepWindows(self, [checkpoint.a, checkpoint.b], rtol, atol, part, checkpoint.y, None)
        config = same_steps_config(problem.config, problem.solver, problem.t.tolist(), checkpoint.a, checkpoint.b)
        if problem.solver.error_estimate and problem.config.controller.first_step is None:
            config = config.with_controller(first_step=checkpoint.step)
        span = torch.tensor([checkpoint.a, checkpoint.b], dtype=torch.float64, device=checkpoint.y.device)
        with torch.no_grad():
            sol = problem.solver.integrate(CountedFunc(problem.func, problem.t.dtype), checkpoint.y, span,
                                           replace(config, observers=(windows,), record_stiffness=False))
        trajectory.refit_nfe += sol.stats.nfe_forward
        return part

    def _solve_at_nodes(self, problem: Problem) -> tuple[Solution, _ResolveSampler]:
        """One forward solve whose extra output times are the first try of every segment's nodes
        and held-out points (adaptive methods) or the step points (fixed-step methods), for
        integrators without dense output."""
        times = problem.t.tolist()
        config, grid = problem.config, None
        if problem.solver.error_estimate:
            n = self.node_counts()[0]
            extra: list[float] = []
            for a, b in zip(times, times[1:]):
                extra += ChebyshevInterpolant.points(n, a, b)
                extra += to_interval(chebyshev_extrema(n), a, b).tolist()[1:-1]
        else:
            extra = grid = as_times(problem.t, fixed_grid(times, config))
            config = same_steps_config(config, problem.solver, times, times[0], times[-1])
        outputs = TimeAxis.of(times[0], times[-1]).ordered(set(times) | set(as_times(problem.t, extra)))
        full = problem.solver.integrate(problem.func, problem.y0, problem.t.new_tensor(outputs), config)
        values = dict(zip(outputs, full.ys))
        ys = torch.stack([values[x] for x in times])
        # fixed-step output times between grid points may be interpolated linearly: keep step values
        cache = values if grid is None else {g: values[g] for g in grid}
        return Solution(ys=ys, stats=full.stats, steps=full.steps), _ResolveSampler(problem, cache, grid)

    def _fit_piece(self, sampler, segment: int, a: float, b: float, rtol: float, atol: float,
                   budget: list[int], result: Trajectory, first_count: int | None = None) -> None:
        best: tuple[float, ChebyshevInterpolant, int] | None = None
        counts = self.node_counts()
        for n in counts[bisect.bisect_left(counts, first_count or 0):]:
            nodes = ChebyshevInterpolant.points(n, a, b)
            held_out = to_interval(chebyshev_extrema(n), a, b).tolist()
            held_out[0], held_out[-1] = b, a  # exactly the ends, not a rounding beyond them
            samples = sampler.sample(segment, nodes + held_out)  # one call: one consistent source
            piece = ChebyshevInterpolant(a, b, samples[:n].clone())  # not a view keeping the held-out samples
            error = _held_out_error(piece, held_out, samples[n:], rtol, atol)
            if error <= 1.0:
                result.add(piece)
                return
            if best is None or error < best[0]:
                best = (error, piece, n)
        if budget[0] > 0:
            budget[0] -= 1
            mid = 0.5 * (a + b)
            self._fit_piece(sampler, segment, a, mid, rtol, atol, budget, result, first_count)
            self._fit_piece(sampler, segment, mid, b, rtol, atol, budget, result, first_count)
            return
        error, piece, n = best
        message = (f"the Chebyshev interpolant of the forward trajectory on [{a:.6g}, {b:.6g}] "
                   f"(observation segment {segment}) misses held-out points by {error:.3g}x the "
                   f"check tolerance (rtol={rtol:.3g}, atol={atol:.3g}) with {n} nodes and "
                   f"{self.max_pieces} pieces per segment; gradients would be inaccurate. Allow more "
                   f"nodes or pieces (Interpolation(max_nodes=..., max_pieces=...)), add "
                   f"observation times, tighten the forward tolerances, or loosen check_rtol/"
                   f"check_atol")
        if self.on_failure == "raise":
            raise InterpolationError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        result.add(piece)

    # ---- backward --------------------------------------------------------------------------

    def backward_pass(self, problem: Problem, ys: Tensor, context: Trajectory, grad_ys: Tensor):
        """Solve ``[a, g]`` backwards segment by segment, reading y(t) from the trajectory;
        returns ``(dL/dy0, dL/dθ per param, NFE spent)``."""
        params, t, trajectory = problem.params, problem.t, context
        shape, n = problem.y0.shape, problem.y0.numel()
        sizes = (n, sum(p.numel() for p in params))
        solver = self.backward_solver(problem)
        config = self.backward_config(problem, norm=BlockNorm(sizes, 1 if self.seminorm else 2))
        times = t.tolist()
        adjoint = _HostTimes(_AdjointSystem(problem, trajectory))

        a = grad_ys[-1]
        g = problem.y0.new_zeros(sizes[1])
        nfe = -trajectory.refit_nfe  # the stretches solved again count as backward evaluations
        first_step = config.controller.first_step
        first_step = trajectory.step_hint if first_step is None else first_step
        for i in range(len(t) - 1, 0, -1):
            segment_config = same_steps_config(config, solver, times, times[i], times[i - 1])
            if solver.error_estimate:
                segment_config = segment_config.with_controller(stops=(times[i - 1],), first_step=(
                    None if first_step is None else abs(first_step)))
            sol = solver.integrate(adjoint, torch.cat([a.reshape(-1), g]), t[i - 1:i + 1].flip(0),
                                   segment_config)
            nfe += sol.stats.nfe_forward
            first_step = sol.next_step or first_step
            a = sol.ys[-1][:n].view(shape) + grad_ys[i - 1]
            g = sol.ys[-1][n:]
        return a, split_like(g, params), nfe + trajectory.refit_nfe

    def traced_solve(self, problem: Problem) -> Solution | None:
        """On the traced driver: one traced backward sweep of a (and g), y read from Chebyshev
        interpolants of ``nodes`` (default :data:`~._traced_adjoint.TRACED_NODES`) nodes per
        segment (and entry), sampled as extra output times of the forward solve (see
        :mod:`._traced_adjoint`)."""
        if not traces_backward(self, problem):
            return None
        sweep = Sweep(chebyshev=self.nodes or TRACED_NODES, check=self.check_tolerances(problem))
        return traced_adjoint(self, problem, sweep)

    def per_sample_backward_pass(self, problem: Problem, ys: Tensor, context, grad_ys: Tensor):
        """Per-sample: only a is solved backwards, y read from the Chebyshev interpolants of each
        entry's segments (:mod:`._per_entry_chebyshev`); the parameter integral by the backward
        steps' own Runge–Kutta quadrature (see :mod:`._per_sample`)."""
        return per_sample_backward(self, problem, ys, grad_ys, trajectory=context)
