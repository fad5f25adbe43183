"""One solve + backward pass for one (method, gradient) pair, and the finite-difference reference.

Gradients are returned as named groups — ``"y0"`` (``"y0[i]"`` for tuple states), one entry per
parameter, and ``"t"`` — so reports can say *which* gradient disagrees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..api import solve
from ..errors import InvalidInput, UnsupportedCombination
from ..gradients import backend_names
from ..solvers import solver_names
from ._tolerances import Settings

State = Tensor | tuple[Tensor, ...]
Loss = Callable[[State], Tensor]


# Forward integrators outside the registry that every property also checks.
EXTERNAL_METHODS = ("torchdiffeq:dopri5",)


def registered_pairs(external: bool = True) -> list[tuple[str, str]]:
    """Every (method, gradient) pair registered right now (``solver_names() × backend_names()``,
    plus the torchdiffeq adapter's dopri5 when ``external``), so new ones are checked unedited."""
    methods = (*solver_names(), *(EXTERNAL_METHODS if external else ()))
    return [(m, g) for m in methods for g in backend_names()]


def _flat(ys: State) -> Tensor:
    if isinstance(ys, Tensor):
        return ys.reshape(-1)
    return torch.cat([y.reshape(-1) for y in ys])


class RandomProjectionLoss:
    """``L(ys) = Σ w ⊙ ys + ½ Σ ys²`` with fixed random weights ``w ~ N(0, 1)`` drawn from ``seed``
    (per output size). Non-degenerate: every output time and component gets a generic, different
    cotangent, and the quadratic term makes dL/dys depend on the solution."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._weights: dict[tuple[int, torch.dtype], Tensor] = {}

    def __call__(self, ys: State) -> Tensor:
        flat = _flat(ys)
        key = (flat.numel(), flat.dtype)
        if key not in self._weights:
            generator = torch.Generator().manual_seed(self.seed)
            self._weights[key] = torch.randn(flat.numel(), generator=generator, dtype=torch.float64)
        w = self._weights[key].to(dtype=flat.dtype, device=flat.device)
        return (w * flat).sum() + 0.5 * flat.pow(2).sum()

    def __repr__(self) -> str:
        return f"RandomProjectionLoss(seed={self.seed})"


def named_params(func: Callable, params: Sequence[Tensor] | None) -> dict[str, Tensor]:
    """The tensors to differentiate, by name (``func.named_parameters()`` for modules)."""
    if params is not None:
        return {f"params[{i}]": p for i, p in enumerate(params)}
    if isinstance(func, nn.Module):
        return {name: p for name, p in func.named_parameters() if p.requires_grad}
    return {}


def _y0_leaves(y0: State) -> dict[str, Tensor]:
    if isinstance(y0, Tensor):
        return {"y0": y0.detach().clone().requires_grad_(True)}
    return {f"y0[{i}]": y.detach().clone().requires_grad_(True) for i, y in enumerate(y0)}


@dataclass
class PairRun:
    """Outcome of one (method, gradient) pair on one problem.

    Attributes:
        status: ``"ok"``, ``"n/a"`` (the pair raised UnsupportedCombination) or ``"error"``.
        value: the loss; grads: gradient groups by name (see module docstring).
        ys: the solution (tuple states concatenated on the last dimension), detached.
        nfe_forward, nfe_backward, steps: cost counters from the Solution's stats (``steps`` is the
            forward NFE for integrators that report no accepted steps).
        seconds: wall time of solve + backward.
        message: why the pair is n/a or failed.
        extrapolated: for a Richardson value (:func:`odegrad.testing.run_converging`), the settings
            of its coarser grid (the finer halves every step); None for a plain run.
    """

    method: str
    gradient: str
    status: str
    value: float = math.nan
    grads: dict[str, Tensor] = field(default_factory=dict)
    ys: Tensor | None = None
    nfe_forward: int = 0
    nfe_backward: int = 0
    steps: int = 0
    seconds: float = 0.0
    message: str = ""
    extrapolated: Settings | None = None

    @property
    def label(self) -> str:
        """``"method/gradient"``, the pair's name in reports."""
        return f"{self.method}/{self.gradient}"


def run_pair(func: Callable, y0: State, t: Tensor, method: Any, gradient: Any, *, settings: Settings,
             loss: Loss, params: Sequence[Tensor] | None = None, catch: bool = False) -> PairRun:
    """Solve with ``(method, gradient)`` and backpropagate ``loss(ys)`` to y0, params and t.

    Exceptions propagate unless ``catch``: then UnsupportedCombination gives ``status="n/a"`` and
    any other exception ``status="error"``, each with the message. ``method`` and ``gradient``
    may also be configured objects (labelled by their repr).
    """
    named = named_params(func, params)
    y0_leaves = _y0_leaves(y0)
    t_leaf = t.detach().clone().requires_grad_(True)
    state = y0_leaves["y0"] if isinstance(y0, Tensor) else tuple(y0_leaves.values())
    start = time.perf_counter()
    try:
        solution = solve(func, state, t_leaf, method=method, gradient=gradient,
                         params=tuple(named.values()) if params is not None else None, **settings.kwargs())
        value = loss(solution.ys)
        leaves = (*y0_leaves.values(), *named.values(), t_leaf)
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
    except Exception as error:  # noqa: BLE001 - reported, not swallowed, when asked to
        if not catch:
            raise
        status = "n/a" if isinstance(error, UnsupportedCombination) else "error"
        return PairRun(str(method), str(gradient), status, message=f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    names = (*y0_leaves, *named, "t")
    grads_by_name = {name: (torch.zeros_like(leaf) if g is None else g.detach())
                     for name, leaf, g in zip(names, leaves, grads)}
    ys = solution.ys if isinstance(solution.ys, Tensor) else torch.cat(
        [y.reshape(y.shape[0], -1) for y in solution.ys], dim=-1)
    stats = solution.stats
    return PairRun(str(method), str(gradient), "ok", value=float(value.detach()), grads=grads_by_name, ys=ys.detach(),
                   nfe_forward=stats.nfe_forward, nfe_backward=stats.nfe_backward,
                   steps=stats.steps_accepted or stats.nfe_forward, seconds=seconds)


GROUP_FLOOR = 0.1
"""Floor of a gradient group's scale in :func:`relative_disagreement`, as a fraction of the largest
gradient entry of all groups."""


def relative_disagreement(a: dict[str, Tensor], b: dict[str, Tensor]) -> tuple[float, str]:
    """Largest normwise relative difference over the gradient groups, and the group where it is.

    Each group's difference is divided by the larger of the two groups' ∞-norms, floored at
    :data:`GROUP_FLOOR` times the largest gradient overall: a group that is (nearly) zero is
    compared on the scale of the others, since discretisation errors couple all groups."""
    if a.keys() != b.keys():
        raise InvalidInput("gradient groups", sorted(b), f"the same groups as {sorted(a)}")
    overall = max((float(g.abs().max()) for g in (*a.values(), *b.values()) if g.numel()), default=0.0)
    worst, where = 0.0, ""
    for name in a:
        if a[name].numel() == 0:
            continue
        scale = max(float(a[name].abs().max()), float(b[name].abs().max()), GROUP_FLOOR * overall, 1e-300)
        error = float((a[name] - b[name]).abs().max()) / scale
        if not math.isfinite(error):
            return math.inf, name
        if error > worst:
            worst, where = error, name
    return worst, where


def reference_error(grads: dict[str, Tensor], reference: dict[str, Tensor]) -> tuple[float, str]:
    """Largest relative error of ``grads`` against ``reference`` over the gradient groups, and the
    group where it is. Each group's ‖g − ref‖∞ is divided by the *reference's* ‖ref‖∞, floored at
    :data:`GROUP_FLOOR` times the reference's largest entry: a wrong answer cannot enlarge its own
    denominator (as it can in :func:`relative_disagreement`, which divides by the larger of two)."""
    if grads.keys() != reference.keys():
        raise InvalidInput("gradient groups", sorted(grads), f"the reference's groups {sorted(reference)}")
    overall = max((float(g.abs().max()) for g in reference.values() if g.numel()), default=0.0)
    worst, where = 0.0, ""
    for name, ref in reference.items():
        if ref.numel() == 0:
            continue
        scale = max(float(ref.abs().max()), GROUP_FLOOR * overall, 1e-300)
        error = float((grads[name].to(ref.dtype) - ref).abs().max()) / scale
        if not math.isfinite(error):
            return math.inf, name
        if error > worst:
            worst, where = error, name
    return worst, where


def fine_grid(t: Tensor, steps: int) -> list[float]:
    """Times containing every ``t[i]``, each segment cut into equal substeps, ≈ ``steps`` in all."""
    values = [float(v) for v in t.detach().tolist()]
    span = abs(values[-1] - values[0])
    grid = [values[0]]
    for a, b in zip(values, values[1:]):
        m = max(1, math.ceil(steps * abs(b - a) / span))
        grid.extend(a + (b - a) * k / m for k in range(1, m))
        grid.append(b)
    return grid


def reference_loss(func: Callable, y0: State, t: Tensor, loss: Loss, steps: int) -> float:
    """``loss(ys)`` from classical RK4 on :func:`fine_grid` (a smooth function of y0, θ and t:
    the grid moves with t, so central differences of it are differentiable)."""
    with torch.no_grad():
        ys = solve(func, y0, t, method="rk4", options={"grid": fine_grid(t, steps)}).ys
        return float(loss(ys))


def converged_reference_steps(func: Callable, y0: State, t: Tensor, loss: Loss, *, rel: float = 1e-11,
                              start: int = 32, limit: int = 8192) -> int:
    """Smallest power-of-two multiple of ``start`` steps at which doubling changes the RK4
    reference loss by at most ``rel`` relative (so its error is ≲ rel/15)."""
    steps = start
    previous = reference_loss(func, y0, t, loss, steps)
    while steps < limit:
        current = reference_loss(func, y0, t, loss, 2 * steps)
        if abs(current - previous) <= rel * max(abs(current), 1e-300):
            return 2 * steps
        steps, previous = 2 * steps, current
    return steps


def _perturbed(func: Callable, named: dict[str, Tensor], y0: State, t: Tensor,
               direction: dict[str, Tensor], eps: float, loss: Loss, steps: int) -> float:
    """Reference loss at inputs moved by ``eps · direction`` (parameters are restored after)."""
    with torch.no_grad():
        for name, p in named.items():
            p.add_(direction[name], alpha=eps)
        try:
            if isinstance(y0, Tensor):
                y0_moved: State = y0 + eps * direction["y0"]
            else:
                y0_moved = tuple(y + eps * direction[f"y0[{i}]"] for i, y in enumerate(y0))
            return reference_loss(func, y0_moved, t + eps * direction["t"], loss, steps)
        finally:
            for name, p in named.items():
                p.sub_(direction[name], alpha=eps)


@dataclass
class FiniteDifferences:
    """Central-difference directional derivatives of the RK4 reference loss (gradcheck's fast
    mode): ``derivatives[k] ≈ ⟨∇L, directions[k]⟩``.

    Attributes:
        directions: unit directions, as gradient groups by name (``"y0"``, parameter names, ``"t"``).
        derivatives: the central differences along each direction.
        steps: RK4 steps of the reference solve.
        eps: the finite-difference step.
    """

    directions: list[dict[str, Tensor]]
    derivatives: list[float]
    steps: int
    eps: float

    def error_of(self, grads: dict[str, Tensor], floor: float = 0.0,
                 reference: dict[str, Tensor] | None = None) -> float:
        """Largest |⟨g, v⟩ − FD| / (max(‖r‖₂, floor) ‖v‖₂) over the directions (normwise
        relative), r = ``reference`` when given (a size a wrong ``grads`` cannot inflate), else g;
        both restricted to the groups each direction moves, so a direction along one group
        measures that group's error relative to that group."""
        worst = 0.0
        sizes = grads if reference is None else reference
        for v, fd in zip(self.directions, self.derivatives):
            moved = [k for k in v if bool(v[k].any())]
            dot = sum(float((grads[k] * v[k]).sum()) for k in moved)
            g_norm = math.sqrt(sum(float(sizes[k].pow(2).sum()) for k in moved))
            v_norm = math.sqrt(sum(float(v[k].pow(2).sum()) for k in moved))
            scale = max(max(g_norm, floor) * v_norm, abs(fd), 1e-300)
            worst = max(worst, abs(dot - fd) / scale)
        return worst


def finite_differences(func: Callable, y0: State, t: Tensor, loss: Loss, *,
                       params: Sequence[Tensor] | None = None, n_directions: int = 3,
                       seed: int = 0, eps: float = 1e-5, steps: int | None = None,
                       only_t: bool = False, along: dict[str, Tensor] | None = None) -> FiniteDifferences:
    """Directional central differences over (y0, params, t): one direction per gradient group
    along ``along`` (when given), then ``n_directions`` random ones.

    A direction along one group's gradient measures that whole group — an error confined to one
    parameter group cannot hide in it, as it is diluted by ~1/√n in a random direction. The
    random directions' t-part is scaled by the smallest gap in t so perturbed times stay
    monotone; ``only_t=True`` perturbs (and checks) the times alone.

    Args:
        func, y0, t: the problem (``func(t, y)``; its parameters are perturbed in place and restored).
        loss: maps the solution ``ys`` to a scalar.
        params: the tensors to perturb (None: ``func``'s parameters when it is an nn.Module).
        n_directions: number of random directions (may be 0 when ``along`` is given).
        seed: seed of the directions.
        eps: step of the central differences along each unit direction.
        steps: RK4 steps of the reference solve (None: doubled until the loss converges).
        along: gradient groups by name (``"y0"``, parameter names, ``"t"``, as
            :attr:`PairRun.grads`), e.g. a converged reference gradient: one direction per
            nonzero group, along it.

    Raises:
        InvalidInput: ``n_directions`` < 0, or < 1 without ``along``; ``along`` lacks a group.
    """
    if n_directions < (0 if along else 1):
        raise InvalidInput("n_directions", n_directions,
                           "a non-negative integer" if along else "a positive integer")
    named = named_params(func, params)
    if steps is None:
        steps = converged_reference_steps(func, y0, t, loss)
    generator = torch.Generator().manual_seed(seed)
    gaps = (t[1:] - t[:-1]).abs().min() if t.numel() > 1 else torch.tensor(1.0)
    leaves = {**_y0_leaves(y0), **named, "t": t}
    unit = []
    if along is not None:
        if not set(leaves) <= set(along):
            raise InvalidInput("along", sorted(along), f"gradient groups including {sorted(leaves)}")
        unit = [{k: (along[name].to(p) if k == name else torch.zeros_like(p)) for k, p in leaves.items()}
                for name in leaves if float(along[name].abs().max()) > 0]
    for _ in range(n_directions):
        v = {k: (torch.zeros_like(p) if only_t and k != "t" else
                 torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p))
             for k, p in leaves.items()}
        v["t"] = v["t"] * float(gaps)
        unit.append(v)
    directions, derivatives = [], []
    for v in unit:
        # Unit length: the step eps·v then has size eps in every case (ε² truncation ≈ 1e-10).
        norm = math.sqrt(sum(float(x.pow(2).sum()) for x in v.values()))
        v = {k: x / max(norm, 1e-300) for k, x in v.items()}
        plus = _perturbed(func, named, y0, t, v, eps, loss, steps)
        minus = _perturbed(func, named, y0, t, v, -eps, loss, steps)
        if only_t:
            v = {"t": v["t"]}
        directions.append(v)
        derivatives.append((plus - minus) / (2 * eps))
    return FiniteDifferences(directions, derivatives, steps, eps)
