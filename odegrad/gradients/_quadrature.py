"""``gradient="gq"``: the Gauss–Legendre quadrature adjoint (Norcliffe & Deisenroth, TMLR 2023).

The backward pass solves only the augmented state [y, a] backwards on each segment
[t_{i-1}, t_i] between observation times,

    dy/dt = f(t, y),   da/dt = −aᵀ ∂f/∂y,

so the backward system has 2·|y| states (error control over y and a only) instead of the
2·|y| + |θ| of the classic adjoint. The parameter gradient is an ordinary integral,

    dL/dθ = Σ_i ∫_{t_{i-1}}^{t_i} a(t)ᵀ ∂f/∂θ(t, y(t)) dt,

computed per segment by Gauss–Legendre quadrature: y and a at the nodes are read off each
accepted backward step's interpolant as the solve passes them (so they never shorten its steps),
and the node VJPs are evaluated in batches of several nodes (from one or more segments) with one
vmapped call of f and one backward pass, falling back to a loop for functions vmap cannot batch.
After each segment y is reset to the stored forward y(t_{i-1}), which keeps the reverse solve
from drifting.

Memory: nodes are consumed as they are produced — a batch is evaluated and added to the running
integral as soon as k nodes wait — so neither the nodes of a segment nor their evaluations are
held together. k follows a byte budget (``GaussQuadrature(node_memory=...)``): the first node of a
backward pass is evaluated alone while saved-tensor hooks count the bytes autograd keeps for it,
and k is the budget over those bytes plus the node's own states. The default budget is what the
classic adjoint's solver holds anyway (its stages of [y, a, θ]), so gq's peak stays within about
twice backsolve's whatever the node count, the batch size or the horizon. (Integrators without
dense output, the torchdiffeq adapter, return the nodes as output times: one segment's nodes are
held at once there.)
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_positive
from ..errors import InvalidInput, OdegradError
from ..solvers import AcceptedStep, Integrator, JacobianStructure, Solution, TimeAxis
from ._base import (
    AdjointBackend,
    BlockNorm,
    Problem,
    adjoint_state_bytes,
    check_reverse_drift,
    continue_steps,
    func_vjp,
    legendre_rule,
    same_steps_config,
    vjp,
)
from ._per_sample import per_sample_backward
from ._traced_adjoint import Sweep, traced_adjoint, traces_backward

NODE_MEMORY_STATES = 8
"""Default budget of the batched node evaluations, in copies of the classic adjoint's augmented
state [y, a, θ]: what backsolve's dopri5 keeps in its 7 stages and its state anyway."""

MAX_NODES = 256
"""Largest node count accepted per segment (Gauss–Legendre with n nodes is exact for
polynomials of degree 2n − 1; beyond this, add observation times instead)."""


def segment_rule(t_start: float, t_end: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``∫_{t_end}^{t_start} g dt ≈ Σ_k w_k g(τ_k)`` (signed), both ``[n]``,
    with the nodes ordered from ``t_start`` towards ``t_end`` (the direction of the backward solve)."""
    x, w = (np.asarray(values) for values in legendre_rule(n))
    half = (t_start - t_end) / 2.0
    mid = (t_start + t_end) / 2.0
    return (mid + half * x)[::-1].copy(), (half * w)[::-1].copy()


def piecewise_rule(t_start: float, t_end: float, jumps: tuple[float, ...], count) -> tuple[np.ndarray, np.ndarray]:
    """:func:`segment_rule` on each piece of ``[t_end, t_start]`` between the ``jumps`` inside it
    (func, so the integrand aᵀ∂f/∂θ, may be discontinuous there: one Gauss–Legendre rule across a
    jump converges slowly), ``count(length)`` nodes on a piece of that length; nodes ordered from
    ``t_start`` towards ``t_end``."""
    ends = [t_start, *TimeAxis.of(t_start, t_end).between(jumps, t_start, t_end), t_end]
    rules = [segment_rule(a, b, count(abs(a - b))) for a, b in zip(ends[:-1], ends[1:])]
    return np.concatenate([r[0] for r in rules]), np.concatenate([r[1] for r in rules])


class GaussQuadrature(AdjointBackend):
    """Gauss–Legendre quadrature adjoint.

    Args:
        nodes: quadrature nodes per segment (1..256), or None for the automatic rule: the
            reference's ``ceil(gtol · NFE_forward · |t_i − t_{i-1}| / |t_N − t_0|)`` clipped to
            ``[min_nodes, max_nodes]``. Per-sample solves (a 2-D ``t``) place nodes on every
            backward step instead: ``nodes`` per step (None: ``min_nodes``); the automatic rule,
            ``node_memory``, ``vectorize`` and ``max_batch`` do not apply there.
        gtol: factor of the automatic rule (more nodes for larger gtol). The reference's 0.1 gives
            about 0.6 nodes per dopri5 step, too few on a long segment: 3.5e-5 relative gradient
            error on the float32 digits benchmark (8 forward steps, 5 nodes) where 0.2 and above
            reach the 2e-6 of the adjoint solve itself. Default 0.25 (about 1.5 nodes per step).
        min_nodes: floor of the automatic rule. The reference's floor is 1 (the midpoint rule),
            which on short segments (one forward step or less) costs gradient accuracy: 1e-5
            relative error where 3 nodes give 1e-8 on the spiral benchmark. 3 nodes integrate
            degree-5 polynomials exactly, matching a 5th-order solver's interpolant.
        max_nodes: cap of the automatic rule (64 nodes integrate polynomials of degree 127 exactly).
        rtol, atol, method: tolerances and integrator of the backward [y, a] solve
            (default: the forward ones).
        vectorize: evaluate node VJPs with ``torch.func.vmap`` (falls back to a loop, with the
            same result, when vmap cannot batch ``func``).
        node_memory: bytes the batched node evaluations may hold at once: what autograd saves
            for the k evaluations of func in one call (measured on the first node of each
            backward pass) plus the k nodes' states. k is chosen by :meth:`node_batch`. None: the
            bytes of :data:`NODE_MEMORY_STATES` (8) copies of the classic adjoint's state
            [y, a, θ], at least ``MIN_NODE_MEMORY`` (256 KiB) — gq's peak then stays within
            about twice backsolve's. Smaller budgets make more, smaller calls (k ≥ 1 always).
        max_batch: most nodes evaluated in one batched call, whatever the budget allows.
        on_drift: ``"raise"`` :class:`~odegrad.errors.ReverseSolveDrift` or ``"warn"`` when the
            state rebuilt backwards misses a stored forward state (unstable reverse dynamics).
    """

    name = "gq"

    def __init__(self, nodes: int | None = None, *, gtol: float = 0.25, min_nodes: int = 3, max_nodes: int = 64,
                 rtol: float | None = None, atol: float | None = None,
                 method: str | Integrator | None = None, vectorize: bool = True,
                 node_memory: int | None = None, max_batch: int = MAX_NODES, on_drift: str = "raise"):
        super().__init__(rtol=rtol, atol=atol, method=method)
        self.nodes = None if nodes is None else check_int("GaussQuadrature nodes", nodes, low=1, high=MAX_NODES)
        self.gtol = check_positive("GaussQuadrature gtol", gtol)
        self.min_nodes = check_int("GaussQuadrature min_nodes", min_nodes, low=1, high=MAX_NODES)
        self.max_nodes = check_int("GaussQuadrature max_nodes", max_nodes, low=1, high=MAX_NODES)
        if self.min_nodes > self.max_nodes:
            raise InvalidInput("GaussQuadrature min_nodes/max_nodes", f"{min_nodes} > {max_nodes}",
                               "min_nodes <= max_nodes")
        if not isinstance(vectorize, bool):
            raise InvalidInput("GaussQuadrature vectorize", vectorize, "True or False")
        self.vectorize = vectorize
        self.node_memory = None if node_memory is None else check_int("GaussQuadrature node_memory",
                                                                       node_memory, low=1)
        self.max_batch = check_int("GaussQuadrature max_batch", max_batch, low=1)
        self.on_drift = check_choice("GaussQuadrature on_drift", on_drift, ("raise", "warn"))

    def __repr__(self) -> str:
        rule = (f"nodes={self.nodes}" if self.nodes is not None
                else f"gtol={self.gtol}, min_nodes={self.min_nodes}, max_nodes={self.max_nodes}")
        return f"GaussQuadrature({rule}, rtol={self.rtol}, atol={self.atol}, vectorize={self.vectorize})"

    def node_count(self, fraction: float, nfe_forward: int) -> int:
        """Nodes for a segment covering ``fraction`` of the whole time span."""
        if self.nodes is not None:
            return self.nodes
        return max(self.min_nodes, min(math.ceil(self.gtol * nfe_forward * fraction), self.max_nodes))

    def node_batch(self, y0: Tensor, params: tuple[Tensor, ...], saved_bytes: int) -> int:
        """Nodes evaluated per batched call when one evaluation of func at state ``y0``
        (``Tensor[*shape]``) makes autograd save ``saved_bytes``: the budget (``node_memory``, or
        the default from the sizes of y0 and ``params``) over the bytes of one node — those saved
        bytes plus six state-sized tensors: its queued [y, a] and weighted a, their stacked
        copies and its output f — clipped to ``[1, max_batch]``."""
        budget = self.node_memory or adjoint_state_bytes(y0, params, NODE_MEMORY_STATES)
        per_node = saved_bytes + 6 * y0.numel() * y0.element_size()
        return max(1, min(self.max_batch, budget // per_node))

    def forward_pass(self, problem: Problem):
        """Solve forward without a graph; the context is the forward NFE (for the automatic node count)."""
        solution = problem.solver.integrate(problem.func, problem.y0, problem.t, problem.config,
                                            keep_dense=problem.keep_dense)
        return solution, solution.stats.nfe_forward

    def backward_pass(self, problem: Problem, ys: Tensor, context: int, grad_ys: Tensor):
        """Solve ``[y, a]`` backwards segment by segment, handing y and a at the Gauss–Legendre
        nodes to the running quadrature of ``aᵀ∂f/∂θ`` as the solve passes them; returns
        ``(dL/dy0, dL/dθ per param, NFE spent)``, the node evaluations included."""
        func, t, shape = problem.func, problem.t, problem.y0.shape
        n = problem.y0.numel()
        solver = self.backward_solver(problem)
        config = self.backward_config(problem, norm=BlockNorm((n, n)))
        quadrature = _ParamQuadrature(func, problem.params, self.vectorize,
                                      lambda saved: self.node_batch(problem.y0, problem.params, saved))

        def adjoint_dynamics(tt: Tensor, state: Tensor) -> Tensor:
            f, vjp_y, _ = func_vjp(func, tt, state[:n].view(shape), state[n:].view(shape), ())
            return torch.cat([f.reshape(-1), -vjp_y.reshape(-1)])

        adjoint_dynamics.jacobian_structure = JacobianStructure(implicit_size=2 * n)  # implicit methods

        times = t.tolist()
        span = abs(times[-1] - times[0])
        a = grad_ys[-1]
        nfe = 0
        for i in range(len(times) - 1, 0, -1):
            node_times, weights = piecewise_rule(times[i], times[i - 1], problem.config.controller.jumps,
                                                 lambda length: self.node_count(length / span, context))
            nodes = _SegmentNodes(torch.tensor(node_times, dtype=t.dtype, device=t.device), weights,
                                  TimeAxis.of(times[i], times[i - 1]), quadrature if problem.params else None, shape)
            state = torch.cat([ys[i].reshape(-1), a.reshape(-1)])
            segment_config = same_steps_config(config, solver, times, times[i], times[i - 1])
            if solver.has_dense_output:
                sol = solver.integrate(adjoint_dynamics, state, t[i - 1:i + 1].flip(0),
                                       segment_config.with_observer(nodes.reached))
                nodes.require_all_fed(solver)
            else:
                # Nodes rounded to t's dtype may coincide (float32, many nodes): solve at distinct times.
                out_times = torch.cat([t[i:i + 1], nodes.times, t[i - 1:i]])
                distinct, position = torch.unique_consecutive(out_times, return_inverse=True)
                sol = solver.integrate(adjoint_dynamics, state, distinct, segment_config)
                for node_state in sol.ys[position[1:-1]]:
                    nodes.feed(node_state)
            nfe += sol.stats.nfe_forward
            config = continue_steps(solver, config, sol, problem.config)
            check_reverse_drift(self.name, sol.ys[-1, :n].view(shape), ys, i - 1, times[i - 1],
                                problem, config, self.on_drift, sol.stats.steps_accepted)
            a = sol.ys[-1, n:].view(shape) + grad_ys[i - 1]
        grads = quadrature.result()
        return a, grads, nfe + quadrature.evaluations

    def traced_solve(self, problem: Problem) -> Solution | None:
        """On the traced driver: one traced backward sweep of [y, a], the parameter integral by
        Gauss–Legendre quadrature on each backward step (``nodes`` per step, default ``min_nodes``,
        as per sample; see :mod:`._traced_adjoint`)."""
        if not traces_backward(self, problem):
            return None
        return traced_adjoint(self, problem, Sweep(nodes=self.nodes or self.min_nodes))

    def per_sample_backward_pass(self, problem: Problem, ys: Tensor, context: int, grad_ys: Tensor):
        """Per-sample: [y, a] solved backwards, y reset at each entry's output times, and the
        parameter integral by Gauss–Legendre quadrature on each entry's own backward steps
        (``nodes`` per step, default ``min_nodes``; see :mod:`._per_sample`)."""
        return per_sample_backward(self, problem, ys, grad_ys, nodes=self.nodes or self.min_nodes,
                                   on_drift=self.on_drift)


class _SegmentNodes:
    """The Gauss–Legendre nodes of one backward segment — ``times [k]`` in t's dtype, ordered
    along the solve (its ``axis``), and their ``weights [k]`` — handed
    one by one, with y and the weighted a, to ``quadrature`` (None: no parameters to integrate)."""

    def __init__(self, times: Tensor, weights: np.ndarray, axis: TimeAxis,
                 quadrature: _ParamQuadrature | None, shape: torch.Size):
        self.times = times
        self.floats = times.tolist()  # as the integrator sees them
        self.weights = weights.tolist()
        self.axis = axis
        self.quadrature = quadrature
        self.shape = shape
        self.size = shape.numel()
        self.next = 0

    def reached(self, step: AcceptedStep) -> None:
        """Observer (``IntegrationConfig.observers``), called after every accepted step: feed the
        nodes up to the step's end (those the loop would output there), read off the step's
        interpolant; returns None, so the solve never stops early."""
        while self.next < len(self.floats) and not self.axis.before(step.t1, self.floats[self.next]):
            self.feed(step.at(self.floats[self.next]))

    def require_all_fed(self, solver: Integrator) -> None:
        """Raise if the solve skipped nodes (an integrator that never calls the ``event`` hook):
        the parameter gradient would silently miss their terms."""
        if self.next != len(self.floats):
            raise OdegradError(f"gq: the backward integrator {solver!r} handed over {self.next} of "
                               f"{len(self.floats)} quadrature nodes; it must call its IntegrationConfig.observers "
                               f"after every accepted step (or declare has_dense_output = False)")

    def feed(self, state: Tensor) -> None:
        """Hand over the next node's flat state ``[y, a]``."""
        j = self.next
        self.next += 1
        if self.quadrature is not None:
            self.quadrature.add(self.times[j], state[:self.size].view(self.shape),
                                self.weights[j] * state[self.size:].view(self.shape))


class _ParamQuadrature:
    """Accumulates Σ_k (w_k a_k)ᵀ ∂f/∂θ(τ_k, y_k) over quadrature nodes fed one at a time from any
    number of segments. Queued nodes are evaluated together (one vmapped call of func and one
    backward pass) as soon as ``batch`` of them wait, and then dropped. The first node is
    evaluated alone while saved-tensor hooks count the bytes autograd keeps for it;
    ``batch_for(saved_bytes)`` then gives the batch size. Parameters that do not require grad, or
    that func does not use, get zeros."""

    def __init__(self, func, params: tuple[Tensor, ...], vectorize: bool, batch_for):
        self.func = func
        self.params = params
        self.wanted = [i for i, p in enumerate(params) if p.requires_grad]
        self.totals = [torch.zeros_like(p) for p in params]
        self.vectorize = vectorize
        self.batch_for = batch_for
        self.batch: int | None = None
        self.pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self.evaluations = 0

    def add(self, time: Tensor, y: Tensor, weighted_a: Tensor) -> None:
        """Queue one node: ``time`` (0-d), ``y`` and ``weighted_a`` (``Tensor[*shape]``)."""
        if not self.wanted:
            return
        self.pending.append((time, y, weighted_a))
        if len(self.pending) >= (self.batch or 1):
            self._flush()

    def result(self) -> tuple[Tensor, ...]:
        self._flush()
        return tuple(self.totals)

    def _flush(self) -> None:
        if not self.pending:
            return
        times, ys, weighted = (torch.stack(parts) for parts in zip(*self.pending))
        self.pending = []
        if self.batch is None:
            saved, grads = _saved_bytes(lambda: self._evaluate(times, ys, weighted),
                                        (*self.params, ys, weighted))
            self.batch = self.batch_for(saved)
        else:
            grads = self._evaluate(times, ys, weighted)
        for i, g in zip(self.wanted, grads):
            if g is not None:
                self.totals[i] += g
        self.evaluations += len(times)

    def _evaluate(self, times: Tensor, ys: Tensor, weighted: Tensor) -> tuple[Tensor | None, ...]:
        grads = self._vectorized(times, ys, weighted) if self.vectorize else None
        return self._looped(times, ys, weighted) if grads is None else grads
    def _vectorized(self, times: Tensor, ys: Tensor, weighted: Tensor) -> tuple[Tensor | None, ...] | None:
        try:
            with torch.enable_grad():
                f = torch.func.vmap(self.func)(times, ys)
        except OdegradError:
            raise
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
            # vmap cannot batch every func (.item(), data-dependent branches, in-place ops, ...)
            warnings.warn(f"gq: torch.func.vmap cannot batch func ({type(error).__name__}: {error}); "
                          "this backward pass evaluates its quadrature nodes one at a time "
                          "(GaussQuadrature(vectorize=False) skips the attempt)", RuntimeWarning, stacklevel=2)
            self.vectorize = False
            return None
        return self._grads(f, weighted)

    def _looped(self, times: Tensor, ys: Tensor, weighted: Tensor) -> tuple[Tensor | None, ...]:
        with torch.enable_grad():
            f = torch.stack([self.func(tk, yk) for tk, yk in zip(times, ys)])
        return self._grads(f, weighted)

    def _grads(self, f: Tensor, weighted: Tensor) -> tuple[Tensor | None, ...]:
        wanted = [self.params[i] for i in self.wanted]
        if not f.requires_grad:
            return tuple(None for _ in wanted)
        with torch.enable_grad():  # the backward pass runs under no_grad: cast f (as y) on the graph
            f = f.to(weighted.dtype)
        return vjp(f, wanted, weighted)


def _saved_bytes(evaluate, existing: tuple[Tensor, ...]):
    """``(bytes, evaluate())``: the bytes of distinct storage autograd saves for backward while
    ``evaluate()`` runs, not counting the storages of the ``existing`` tensors (parameters and
    inputs, which are alive anyway). Tensors without a plain storage (sparse, e.g. a graph's
    adjacency) count their values and indices."""
    skip = {_storage_key(x)[0] for x in existing}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        key, nbytes = _storage_key(tensor)
        if key not in skip:
            storages[key] = nbytes
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = evaluate()
    return sum(storages.values()), result


def _storage_key(tensor: Tensor) -> tuple[int, int]:
    """``(identity, bytes)`` of the memory behind ``tensor``: its storage, or for layouts without
    one (sparse) the tensor itself with its values and indices."""
    try:
        storage = tensor.untyped_storage()
    except (NotImplementedError, RuntimeError):
        parts = (tensor._values(), tensor._indices()) if tensor.layout == torch.sparse_coo else ()
        return id(tensor), sum(p.numel() * p.element_size() for p in parts) or tensor.element_size()
    return storage.data_ptr(), storage.nbytes()
