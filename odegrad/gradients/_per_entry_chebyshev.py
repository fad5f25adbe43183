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
from ._barycentric import barycentric_matrix, chebyshev_extrema, chebyshev_nodes, chebyshev_weights


class PerEntryChebyshev:
    """y(t) per entry from per-(entry, segment) Chebyshev interpolants: ``trajectory(t: Tensor[B])
    -> Tensor[B, *shape]`` (float64 times; a time outside an entry's span reads its end segment).

    Args:
        sample: ``sample(t: Tensor[B, K]) -> Tensor[B, K, *shape]``, the forward solution per entry.
        t: the per-sample output times ``Tensor[B, n]``.
        counts: node counts to try, increasing.
        rtol, atol: tolerances of the held-out check.
        on_failure: ``"raise"`` or ``"warn"`` when no count meets the check on a segment.
    """

    def __init__(self, sample: Callable[[Tensor], Tensor], t: Tensor, counts: list[int], rtol: float,
                 atol: float, on_failure: str):
        times = t.detach().to(torch.float64)
        self.sign = torch.sign(times[:, -1] - times[:, 0])
        self.starts, self.ends = times[:, :-1], times[:, 1:]
        batch, segments = self.starts.shape
        device = times.device
        self.n_max = counts[-1]
        self.nodes = torch.full((len(counts), self.n_max), 2.0, dtype=torch.float64, device=device)
        self.weights = torch.zeros_like(self.nodes)  # padding: a node outside [-1, 1] with weight 0
        chosen = torch.full((batch, segments), -1, dtype=torch.int64, device=device)
        values = None
        for k, n in enumerate(counts):
            self.nodes[k, :n] = chebyshev_nodes(n, device=device)
            self.weights[k, :n] = chebyshev_weights(n, device=device)
            open_ = chosen < 0
            if not bool(open_.any()):
                break
            held_out = chebyshev_extrema(n, device=device)
            points = torch.cat([self.nodes[k, :n], held_out])
            samples = sample(self._times(points).reshape(batch, segments * len(points)))
            samples = samples.reshape(batch, segments, len(points), *samples.shape[2:])
            if values is None:
                values = samples.new_zeros((batch, segments, self.n_max, *samples.shape[3:]))
            basis = barycentric_matrix(held_out, self.nodes[k, :n], self.weights[k, :n]).to(samples.dtype)
            approx = torch.einsum("hn,bsn...->bsh...", basis, samples[:, :, :n])
            exact = samples[:, :, n:]
            error = _held_out_error(approx, exact, rtol, atol)
            last = k == len(counts) - 1
            take = open_ & ((error <= 1.0) | last)
            values[:, :, :n] = torch.where(take.reshape(batch, segments, *([1] * (values.dim() - 2))),
                                           samples[:, :, :n], values[:, :, :n])
            chosen = torch.where(take, k, chosen)
            if last and bool((take & (error > 1.0)).any()):
                self._refuse(error, take, n, rtol, atol, on_failure)
        self.values, self.chosen = values, chosen
        self.entries = torch.arange(batch, device=device)

    def _times(self, points: Tensor) -> Tensor:
        """The normalized ``points`` on every entry's every segment, ``Tensor[B, segments, len(points)]``."""
        return 0.5 * (self.starts + self.ends)[:, :, None] + 0.5 * (self.ends - self.starts)[:, :, None] * points

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
        key = (self.sign[:, None] * self.ends)  # segment i ends at key i, increasing per row
        segment = torch.searchsorted(key.contiguous(), (self.sign * time)[:, None]).reshape(-1)
        segment = segment.clamp(max=key.shape[1] - 1)
        start, end = self.starts[self.entries, segment], self.ends[self.entries, segment]
        x = (2.0 * time - (start + end)) / (end - start)
        chosen = self.chosen[self.entries, segment]
        basis = barycentric_matrix(x, self.nodes[chosen], self.weights[chosen])  # [B, n_max]: each entry its nodes
        values = self.values[self.entries, segment]  # [B, n_max, *shape]
        return torch.einsum("bn,bn...->b...", basis.to(values.dtype), values)


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
