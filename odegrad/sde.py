"""Neural SDEs trained as Wong–Zakai ODEs with any gradient backend, sampled with torchsde.

A Stratonovich SDE with diagonal noise,

    dx = μ(t, x) dt + σ(t, x) ∘ dW,

is the limit (Wong & Zakai, 1965) of the random ODE

    dx/dt = μ(t, x) + σ(t, x) ⊙ dW̃/dt,

where W̃ is the piecewise-linear interpolation of a Brownian path sampled on a grid ("kinks")
as the grid is refined. Between two kinks dW̃/dt is a constant ω_k = ΔW_k / Δτ_k, so every piece
is an ordinary smooth ODE, and :class:`NeuralSDE` integrates it piece by piece with
``odegrad.odeint``: each solve ends exactly on a kink and the next one starts there with the next
slope, so no step straddles a kink and no evaluation of the vector field sits on a kink with an
ambiguous slope (a single solve through all kinks with forced stops there would evaluate the
step-ending stages of RK methods at a kink, where the field has two values). Because each piece
is a separate solve, every forward method (adaptive or fixed-step) and every gradient backend
(``direct``, ``backsolve``, ``gq``, ``interp``) trains the SDE's drift and diffusion.

The trained μ and σ transfer unchanged to a real SDE solver: :meth:`NeuralSDE.sample` calls
``torchsde.sdeint`` (Stratonovich, diagonal noise) and :meth:`NeuralSDE.to_torchsde` returns the
torchsde-compatible SDE object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torchsde
from torch import Tensor, nn

from ._checks import check_times
from .api import odeint
from .errors import InvalidInput, NonFiniteValue, UnknownName, UnsupportedCombination
from .gradients import Backend, get_backend
from .solvers import Integrator, bad_batch_entries, get_solver

__all__ = ["NeuralSDE", "TorchsdeSDE"]

BrownianSource = Callable[[Tensor, Tensor], Tensor]
"""A Brownian path ``bm(ta, tb) -> W(tb) - W(ta)`` of shape ``[batch, d]`` (e.g. ``torchsde.BrownianInterval``)."""

_TORCHSDE_NOISE = ("scalar", "additive", "general")
_SAMPLE_METHODS = ("midpoint", "milstein", "reversible_heun")


def _check_x0(x0: Any) -> Tensor:
    if not isinstance(x0, Tensor):
        raise InvalidInput("x0", type(x0).__name__, "a Tensor[batch, d]")
    if x0.dim() != 2 or x0.shape[0] == 0 or x0.shape[1] == 0:
        raise InvalidInput("x0 shape", str(tuple(x0.shape)), "(batch, d) with batch, d >= 1")
    if not x0.is_floating_point():
        raise InvalidInput("x0 dtype", str(x0.dtype), "a floating-point dtype")
    if not bool(torch.isfinite(x0).all()):
        raise NonFiniteValue("x0", bad_indices=bad_batch_entries(x0))
    return x0


def _check_output(name: str, out: Any, x: Tensor) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = str(tuple(out.shape)) if isinstance(out, Tensor) else type(out).__name__
        raise InvalidInput(f"{name} output shape", got,
                           f"{tuple(x.shape)} (the shape [batch, d] of x; noise='diagonal' needs "
                           f"one diffusion entry per state entry)")
    return out


class _PieceField:
    """``f(t, x) = μ(t, x) + σ(t, x) ⊙ ω`` on one piece of the path, ``ω: [batch, d]`` its slope."""

    def __init__(self, model: NeuralSDE, slope: Tensor):
        self.model = model
        self.slope = slope

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        drift, diffusion = self.model.coefficients(t, x)
        return drift + diffusion * self.slope


class NeuralSDE(nn.Module):
    """A Stratonovich SDE ``dx = μ(t, x) dt + σ(t, x) ∘ dW`` with diagonal noise, trained as a
    Wong–Zakai ODE through ``odegrad.odeint``.

    Args:
        drift: ``μ(t, x)``: an ``nn.Module`` mapping a 0-dim time and ``x: [batch, d]`` to ``[batch, d]``.
        diffusion: ``σ(t, x)``: same signature and shape (one noise channel per state entry).
        noise: ``"diagonal"`` (the only noise type implemented).
        path_steps: Brownian path samples per unit time; the path's kinks lie on the grid
            ``t[0] + k / path_steps`` (the last piece ends at ``t[-1]``). The Wong–Zakai ODE
            approaches the SDE's sample paths as this grows (strong order 1/2), at the cost of
            one solve per piece.
    """

    def __init__(self, drift: nn.Module, diffusion: nn.Module, noise: str = "diagonal", path_steps: int = 20):
        super().__init__()
        for name, module in (("drift", drift), ("diffusion", diffusion)):
            if not isinstance(module, nn.Module):
                raise InvalidInput(name, type(module).__name__, "an nn.Module called as module(t, x)")
        if noise in _TORCHSDE_NOISE:
            raise UnsupportedCombination(f"NeuralSDE implements noise='diagonal' only (one Brownian motion per "
                                         f"state entry, diffusion output [batch, d]); got noise={noise!r}")
        if noise != "diagonal":
            raise UnknownName("noise", noise, ["diagonal"])
        if isinstance(path_steps, bool) or not isinstance(path_steps, int) or path_steps < 1:
            raise InvalidInput("path_steps", path_steps, "an integer >= 1 (Brownian samples per unit time)")
        self.drift = drift
        self.diffusion = diffusion
        self.noise = noise
        self.path_steps = path_steps

    def coefficients(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ(t, x), σ(t, x))``, both ``[batch, d]`` like ``x``; raises InvalidInput otherwise."""
        return (_check_output("drift", self.drift(t, x), x),
                _check_output("diffusion", self.diffusion(t, x), x))

    def path_times(self, t: Tensor) -> Tensor:
        """Kink times of the Brownian path over ``[t[0], t[-1]]``: ``Tensor[K + 1]`` in ``t``'s dtype,
        ``t[0] + k / path_steps`` for ``k < K`` and ``t[-1]`` last (``K = ceil((t[-1] - t[0]) · path_steps)``)."""
        t0, t1 = float(t[0]), float(t[-1])
        pieces = max(1, math.ceil((t1 - t0) * self.path_steps - 1e-9))
        times = t0 + torch.arange(pieces + 1, dtype=torch.float64) / self.path_steps
        times[-1] = t1
        return torch.unique_consecutive(times.to(device=t.device, dtype=t.dtype))

    def brownian_increments(self, kinks: Tensor, x0: Tensor, generator: torch.Generator | None = None,
                            bm: BrownianSource | None = None) -> Tensor:
        """``ΔW_k = W(kinks[k+1]) − W(kinks[k])``: ``Tensor[K, batch, d]`` in ``x0``'s dtype, from
        ``bm`` when given, else sampled ``N(0, Δτ_k)`` with ``generator``."""
        lengths = (kinks[1:] - kinks[:-1]).to(x0.dtype).view(-1, 1, 1)
        if bm is None:
            device = generator.device if generator is not None else x0.device
            noise = torch.randn(len(lengths), *x0.shape, generator=generator, dtype=x0.dtype, device=device)
            return noise.to(x0.device) * lengths.sqrt()
        increments = torch.stack([bm(a, b) for a, b in zip(kinks[:-1], kinks[1:])])
        if increments.shape[1:] != x0.shape:
            raise InvalidInput("bm increment shape", str(tuple(increments.shape[1:])),
                               f"{tuple(x0.shape)} (the shape of x0)")
        return increments.to(x0.dtype)

    def forward(self, x0: Tensor, t: Tensor, *, gradient: str | Backend = "gq",
                method: str | Integrator = "dopri5", rtol: float = 1e-5, atol: float = 1e-6,
                options: Mapping[str, Any] | None = None, generator: torch.Generator | None = None,
                bm: BrownianSource | None = None) -> Tensor:
        """Sample paths of the Wong–Zakai ODE along one Brownian path per batch entry.

        Args:
            x0: ``Tensor[batch, d]`` initial states.
            t: ``Tensor[T]`` strictly increasing output times (``t[0]`` is the initial time).
            gradient, method, rtol, atol: as in ``odegrad.odeint``; every pair works. The
                tolerances default looser than odeint's: the path's own discretisation (strong
                error of order ``path_steps ** -0.5``) dominates.
            options: ``odeint`` options for each piece's solve (``max_steps``; fixed-step
                ``step_size`` to take several steps per piece; adaptive ``first_step``, which
                defaults to the piece's length, ``norm``, controller options). Not ``grid``: the
                steps of fixed-step methods land on the kinks already.
            generator: seeds the fresh Brownian path drawn on each call (ignored with ``bm``).
            bm: a Brownian path to follow instead, ``bm(ta, tb) -> Tensor[batch, d]`` (e.g.
                ``torchsde.BrownianInterval``), queried at the kinks.

        Returns:
            ``Tensor[T, batch, d]``: the paths at ``t``, differentiable with respect to ``x0`` and
            the parameters of drift and diffusion through ``gradient``.
        """
        x0 = _check_x0(x0)
        t = check_times(t, x0, increasing=True).detach()
        if t.numel() == 1:
            return x0.unsqueeze(0)
        piece_options = dict(options or {})
        if "grid" in piece_options:
            raise UnsupportedCombination("options['grid'] does not apply to NeuralSDE: each piece between two "
                                         "kinks is solved on its own; use options['step_size'] for finer steps")
        solver, backend = get_solver(method), get_backend(gradient)
        kinks = self.path_times(t)
        lengths = (kinks[1:] - kinks[:-1]).to(x0.dtype).view(-1, 1, 1)
        slopes = self.brownian_increments(kinks, x0, generator, bm) / lengths
        times = torch.unique(torch.cat([t, kinks]))
        ends = torch.searchsorted(times, kinks).tolist()
        params = tuple(p for p in self.parameters() if p.requires_grad)
        states = [x0]
        for k, (start, end) in enumerate(zip(ends[:-1], ends[1:])):
            if solver.error_estimate and "first_step" not in piece_options:
                step_options = {**piece_options, "first_step": float(kinks[k + 1] - kinks[k])}
            else:
                step_options = piece_options
            ys = odeint(_PieceField(self, slopes[k]), states[-1], times[start:end + 1], method=solver,
                        gradient=backend, rtol=rtol, atol=atol, options=step_options, params=params)
            states.extend(ys[1:])
        return torch.stack(states)[torch.searchsorted(times, t)]

    def to_torchsde(self) -> TorchsdeSDE:
        """This SDE as a torchsde SDE object (shares drift and diffusion, so it has the same parameters)."""
        return TorchsdeSDE(self)

    def sample(self, x0: Tensor, t: Tensor, n: int = 1, *, method: str = "midpoint", dt: float = 1e-2,
               bm: Any = None, generator: torch.Generator | None = None) -> Tensor:
        """Sample the SDE itself with ``torchsde.sdeint`` (Stratonovich, diagonal noise).

        Args:
            x0: ``Tensor[batch, d]`` initial states.
            t: ``Tensor[T]`` strictly increasing output times.
            n: paths per initial state.
            method: torchsde's ``"midpoint"``, ``"milstein"`` or ``"reversible_heun"``.
            dt: torchsde's fixed step size.
            bm: a torchsde Brownian motion of size ``[n · batch, d]`` over ``[t[0], t[-1]]`` (row
                ``i · batch + j`` drives path ``i`` of ``x0[j]``); default: a fresh
                ``torchsde.BrownianInterval`` seeded from ``generator``.

        Returns:
            ``Tensor[T, n, batch, d]`` sample paths (differentiable through torchsde's own solver).
        """
        x0 = _check_x0(x0)
        t = check_times(t, x0, increasing=True).detach()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput("n", n, "a positive integer (paths per initial state)")
        if method not in _SAMPLE_METHODS:
            raise UnknownName("method", method, _SAMPLE_METHODS)
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (math.isfinite(dt) and dt > 0):
            raise InvalidInput("dt", dt, "a finite positive step size")
        starts = x0.repeat(n, 1)
        if bm is None:
            entropy = int(torch.randint(2 ** 31 - 1, (), generator=generator))
            bm = torchsde.BrownianInterval(t0=float(t[0]), t1=float(t[-1]), size=tuple(starts.shape),
                                           dtype=x0.dtype, device=x0.device, entropy=entropy, dt=dt)
        ys = torchsde.sdeint(self.to_torchsde(), starts, t.to(x0.dtype), bm=bm, method=method, dt=dt)
        return ys.view(len(t), n, *x0.shape)


class TorchsdeSDE(nn.Module):
    """A :class:`NeuralSDE`'s drift and diffusion in torchsde's convention: ``f(t, y)`` and
    ``g(t, y)`` (both ``[batch, d]``), ``sde_type = "stratonovich"``, ``noise_type = "diagonal"``.
    Usable with ``torchsde.sdeint`` and ``torchsde.sdeint_adjoint``.

    Args:
        model: the NeuralSDE whose drift and diffusion (and so parameters) this object shares.
    """

    sde_type = "stratonovich"
    noise_type = "diagonal"

    def __init__(self, model: NeuralSDE):
        super().__init__()
        self.model = model

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """Drift ``μ(t, y)``: ``[batch, d]``."""
        return _check_output("drift", self.model.drift(t, y), y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """Diagonal diffusion ``σ(t, y)``: ``[batch, d]``."""
        return _check_output("diffusion", self.model.diffusion(t, y), y)
