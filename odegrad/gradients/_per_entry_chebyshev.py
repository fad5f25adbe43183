"""The interp backend's trajectory in per-sample mode: per batch entry and observation segment, a
Chebyshev interpolant of the forward solution (IRDM), each with its own node count.

After the forward solve, every segment [t_{b,i}, t_{b,i+1}] of every entry b is sampled (from the
forward steps' dense output) at the n first-kind Chebyshev points and the n + 1 held-out
second-kind points, for n = the backend's node counts in turn; an (entry, segment) keeps the first
n whose interpolant meets the held-out check, so an entry's interpolants do not depend on the
batch. Chebyshev points in the interval's own coordinate are the same for every entry, so one
basis matrix per n serves the whole batch. Only the node values are kept for the backward pass,
``Tensor[B, n_segments, n_max, *shape]`` (zero-weight padding beyond an entry's own n); the
forward steps are dropped. No segment is split into pieces here: one that needs more than
``max_nodes`` nodes is refused (or warned about) by entry and segment.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import InterpolationError
from ..solvers import TimeAxis
from ._barycentric import barycentric_matrix, chebyshev_extrema, chebyshev_nodes, chebyshev_weights


class PerEntryChebyshev:
    """y(t) per entry from per-(entry, segment) Chebyshev interpolants: ``trajectory(t: Tensor[B])
    -> Tensor[B, *shape]`` (float64 times; a time outside an entry's span reads its end segment).
    Built by :meth:`fit` (per-sample solves) or :func:`from_outputs` (the traced interp backward).

    Args:
        t: the output times ``Tensor[B, n]``.
        nodes, weights: the node sets and their barycentric weights, ``Tensor[counts, n_max]``
            (padding: nodes at 2 with weight 0).
        values: the node values, ``Tensor[B, segments, n_max, *shape]``.
        chosen: which node set each (entry, segment) uses, ``Tensor[B, segments]`` (int64).
    """

    def __init__(self, t: Tensor, nodes: Tensor, weights: Tensor, values: Tensor, chosen: Tensor):
        times = t.detach().to(torch.float64)
        self.axis = TimeAxis.of_rows(times, 1)
        # copies, not views of one tensor: a traced loop reading them may not take aliased inputs
        self.starts, self.ends = times[:, :-1].clone(), times[:, 1:].clone()
        self.nodes, self.weights, self.values, self.chosen = nodes, weights, values, chosen
        self.entries = torch.arange(len(times), device=times.device)

    @classmethod
    def fit(cls, sample: Callable[[Tensor], Tensor], t: Tensor, counts: list[int], rtol: float, atol: float,
            on_failure: str) -> PerEntryChebyshev:
        """Interpolants from the forward solution ``sample(t: Tensor[B, K]) -> Tensor[B, K, *shape]``
        per entry: each (entry, segment) takes the first of the node ``counts`` (increasing) that
        meets the held-out check with ``rtol``/``atol``; ``on_failure`` (``"raise"`` or
        ``"warn"``) where none does."""
        times = t.detach().to(torch.float64)
        starts, ends = times[:, :-1], times[:, 1:]
        batch, segments = starts.shape
        device = times.device
        n_max = counts[-1]
        nodes = torch.full((len(counts), n_max), 2.0, dtype=torch.float64, device=device)
        weights = torch.zeros_like(nodes)
        chosen = torch.full((batch, segments), -1, dtype=torch.int64, device=device)
        values = None
        for k, n in enumerate(counts):
            nodes[k, :n] = chebyshev_nodes(n, device=device)
            weights[k, :n] = chebyshev_weights(n, device=device)
            open_ = chosen < 0
            if not bool(open_.any()):
                break
            held_out = chebyshev_extrema(n, device=device)
            points = torch.cat([nodes[k, :n], held_out])
            samples = sample(segment_times(starts, ends, points).reshape(batch, segments * len(points)))
            samples = samples.reshape(batch, segments, len(points), *samples.shape[2:])
            if values is None:
                values = samples.new_zeros((batch, segments, n_max, *samples.shape[3:]))
            error = check_error(samples[:, :, :n], samples[:, :, n:], n, rtol, atol)
            last = k == len(counts) - 1
            take = open_ & ((error <= 1.0) | last)
            values[:, :, :n] = torch.where(take.reshape(batch, segments, *([1] * (values.dim() - 2))),
                                           samples[:, :, :n], values[:, :, :n])
            chosen = torch.where(take, k, chosen)
            if last and bool((take & (error > 1.0)).any()):
                cls._refuse(error, take, n, rtol, atol, on_failure)
        return cls(t, nodes, weights, values, chosen)


    @staticmethod
    def _refuse(error: Tensor, failed: Tensor, n: int, rtol: float, atol: float, on_failure: str) -> None:
        worst = torch.where(failed, error, 0.0)
        entry, segment = divmod(int(worst.argmax()), worst.shape[1])
        message = (f"the Chebyshev interpolant of the forward trajectory of batch entry {entry} on its "
                   f"observation segment {segment} misses held-out points by {float(worst.max()):.3g}x the "
                   f"check tolerance (rtol={rtol:.3g}, atol={atol:.3g}) with {n} nodes (per-sample mode does "
                   "not split segments); gradients would be inaccurate. Allow more nodes "
                   "(Interpolation(max_nodes=...)), add output times or tighten the forward tolerances")
        if on_failure == "raise":
            raise InterpolationError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def __call__(self, time: Tensor) -> Tensor:
        key = self.axis.along(self.ends)  # segment i ends at key i, increasing per row
        segment = torch.searchsorted(key.contiguous(), self.axis.along(time[:, None])).reshape(-1)
        segment = segment.clamp(max=key.shape[1] - 1)
        start, end = self.starts[self.entries, segment], self.ends[self.entries, segment]
        x = (2.0 * time - (start + end)) / (end - start)
        chosen = self.chosen[self.entries, segment]
        basis = barycentric_matrix(x, self.nodes[chosen], self.weights[chosen])  # [B, n_max]: each entry its nodes
        values = self.values[self.entries, segment]  # [B, n_max, *shape]
        return torch.einsum("bn,bn...->b...", basis.to(values.dtype), values)


def segment_times(starts: Tensor, ends: Tensor, points: Tensor) -> Tensor:
    """The normalized ``points`` (of [−1, 1]) on every segment [starts, ends] (``Tensor[B,
    segments]``), ``Tensor[B, segments, len(points)]``."""
    return 0.5 * (starts + ends)[:, :, None] + 0.5 * (ends - starts)[:, :, None] * points


def check_error(values: Tensor, held_out: Tensor, n: int, rtol: float, atol: float) -> Tensor:
    """The held-out check of ``n``-node interpolants, ``Tensor[B, segments]`` (≤ 1: passed): their
    node ``values`` (``Tensor[B, segments, n, *shape]``) interpolated at the n + 1 second-kind
    points against the solution there, ``held_out`` (``Tensor[B, segments, n + 1, *shape]``)."""
    basis = barycentric_matrix(chebyshev_extrema(n, device=values.device), chebyshev_nodes(n, device=values.device),
                               chebyshev_weights(n, device=values.device)).to(values.dtype)
    return _held_out_error(torch.einsum("hn,bsn...->bsh...", basis, values), held_out, rtol, atol)


def _held_out_error(approx: Tensor, exact: Tensor, rtol: float, atol: float) -> Tensor:
    """Per (entry, segment), the largest |approx − exact| / (atol + rtol·|value|) over its held-out
    points, ``Tensor[B, segments]`` (both ``Tensor[B, segments, points, *shape]``); tolerances
    floored at 64 ulps of the dtype (atol: of the segment's largest |value|), as the shared-step
    check floors them."""
    eps = torch.finfo(exact.dtype).eps
    floor = (64 * eps * exact.flatten(2).abs().amax(dim=2)).clamp(min=atol)
    scale = torch.maximum(exact.abs(), approx.abs()) * max(rtol, 64 * eps)
    scale = scale + floor.reshape(*floor.shape, *([1] * (exact.dim() - 2)))
    return ((approx - exact).abs() / scale).flatten(2).amax(dim=2)


def chebyshev_output_times(t: Tensor, n: int) -> Tensor:
    """The output times of a forward solve that samples ``n``-node interpolants on every segment of
    every row of ``t`` (``Tensor[B, count]``; the traced interp backward): each ``t_i`` followed by
    the 2n − 1 points inside [t_i, t_{i+1}] (the n nodes and the n − 1 interior held-out points,
    ordered from t_i), ``Tensor[B, (count − 1)·2n + 1]`` in t's dtype."""
    times = t.detach().to(torch.float64)
    inside = segment_times(times[:, :-1], times[:, 1:], _interior_points(n, t.device)[0])
    body = torch.cat([times[:, :-1, None], inside], dim=2).reshape(len(times), -1)
    return torch.cat([body, times[:, -1:]], dim=1).to(t.dtype)


def from_outputs(ys: Tensor, t: Tensor, n: int, rtol: float, atol: float) -> tuple[Tensor, Tensor, Tensor]:
    """The ``n``-node interpolants of a solve at :func:`chebyshev_output_times` of ``t``
    (``Tensor[B, count]``; ``ys: Tensor[B, (count − 1)·2n + 1, *shape]``): their node values
    ``Tensor[B, segments, n, *shape]`` (read them with :func:`chebyshev_trajectory`), the outputs
    at ``t`` and the held-out check per entry and segment (≤ 1: passed)."""
    (batch, count), width = t.shape, 2 * n
    outputs = ys[:, ::width]
    rows = ys[:, :-1].reshape(batch, count - 1, width, *ys.shape[2:])  # row 0: t_i; then the inside points
    _, position = _interior_points(n, ys.device)
    values = rows[:, :, 1 + position[:n]]
    inner = rows[:, :, 1 + position[n:]]
    held_out = torch.cat([outputs[:, 1:, None], inner, outputs[:, :-1, None]], dim=2)  # at x = 1 … −1
    return values, outputs, check_error(values, held_out, n, rtol, atol)


def chebyshev_trajectory(t: Tensor, values: Tensor) -> PerEntryChebyshev:
    """y(t) per entry from the node values of :func:`from_outputs` (``Tensor[B, segments, n,
    *shape]``) on the segments of the rows of ``t`` (``Tensor[B, count]``)."""
    batch, segments, n = values.shape[:3]
    chosen = torch.zeros((batch, segments), dtype=torch.int64, device=values.device)
    return PerEntryChebyshev(t, chebyshev_nodes(n, device=values.device)[None],
                             chebyshev_weights(n, device=values.device)[None], values, chosen)


def _interior_points(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The n first-kind nodes and the n − 1 interior second-kind points of [−1, 1], ascending
    (``Tensor[2n − 1]``), and where each of them (nodes, then held-out points in their own order)
    stands in that ascending order."""
    points = torch.cat([chebyshev_nodes(n, device=device), chebyshev_extrema(n, device=device)[1:-1]])
    ascending, order = points.sort()
    return ascending, torch.argsort(order)
