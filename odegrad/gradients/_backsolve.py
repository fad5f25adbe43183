"""``gradient="backsolve"``: the classic continuous adjoint (Chen et al. 2018; torchdiffeq's
``odeint_adjoint``). Solves the augmented state [y, a, ∫ aᵀ∂f/∂θ] backwards segment by segment:

    dy/dt = f(t, y),   da/dt = −aᵀ ∂f/∂y,   dg/dt = −aᵀ ∂f/∂θ,   g(T) = 0  ⇒  g(t0) = dL/dθ.

Memory is independent of the number of steps; the reverse solve of y can drift from the forward
trajectory on dissipative systems (the IRDM and GQ backends address this)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice
from ..solvers import JacobianStructure, Solution
from ._base import (
    AdjointBackend,
    BlockNorm,
    Problem,
    check_reverse_drift,
    continue_steps,
    flat_cat,
    func_vjp,
    same_steps_config,
    split_like,
)
from ._per_sample import per_sample_backward
from ._traced_adjoint import traced_adjoint, traces_backward


class Backsolve(AdjointBackend):
    """Classic adjoint.

    Args:
        rtol, atol, method: backward-solve tolerances and integrator (default: the forward ones).
        seminorm: leave the parameter-gradient integral out of the backward error norm
            (Kidger, Chen & Lyons 2021): fewer backward steps, same accuracy of dL/dθ in practice.
        on_drift: ``"raise"`` :class:`~odegrad.errors.ReverseSolveDrift` or ``"warn"`` when the
            state rebuilt backwards misses a stored forward state (unstable reverse dynamics).
    """

    name = "backsolve"
    seminorm_option = True

    def __init__(self, rtol: float | None = None, atol: float | None = None,
                 method=None, seminorm: bool = False, on_drift: str = "raise"):
        super().__init__(rtol=rtol, atol=atol, method=method)
        self.seminorm = bool(seminorm)
        self.on_drift = check_choice("Backsolve on_drift", on_drift, ("raise", "warn"))

    def __repr__(self) -> str:
        return f"Backsolve(rtol={self.rtol}, atol={self.atol}, seminorm={self.seminorm})"

    def traced_solve(self, problem: Problem) -> Solution | None:
        """On the traced driver: one traced backward sweep of [y, a, g] (:mod:`._traced_adjoint`)."""
        return traced_adjoint(self, problem) if traces_backward(self, problem) else None

    def backward_pass(self, problem: Problem, ys: Tensor, context, grad_ys: Tensor):
        """Solve the augmented system ``[y, a, g]`` backwards from each output time to the previous
        one (adding dL/dys there to a); returns ``(dL/dy0, dL/dθ per param, NFE spent)``."""
        func, params, t = problem.func, problem.params, problem.t
        n = problem.y0.numel()
        sizes = (n, n, sum(p.numel() for p in params))
        solver = self.backward_solver(problem)
        config = self.backward_config(problem, norm=BlockNorm(sizes, 2 if self.seminorm else 3))
        shape = problem.y0.shape

        def augmented(tt: Tensor, state: Tensor) -> Tensor:
            y, a = state[:n].view(shape), state[n:2 * n].view(shape)
            f, vjp_y, vjp_params = func_vjp(func, tt, y, a, params)
            return torch.cat([f.reshape(-1), -vjp_y.reshape(-1), -flat_cat(vjp_params, state)])

        augmented.jacobian_structure = JacobianStructure(implicit_size=2 * n)  # implicit methods: g is a tail

        times = t.tolist()
        a = grad_ys[-1]
        g = problem.y0.new_zeros(sizes[2])
        nfe = 0
        for i in range(len(t) - 1, 0, -1):
            state = torch.cat([ys[i].reshape(-1), a.reshape(-1), g])
            sol: Solution = solver.integrate(augmented, state, t[i - 1:i + 1].flip(0),
                                             same_steps_config(config, solver, times, times[i], times[i - 1]))
            nfe += sol.stats.nfe_forward
            config = continue_steps(solver, config, sol, problem.config)
            end = sol.ys[-1]
            check_reverse_drift(self.name, end[:n].view(shape), ys, i - 1, times[i - 1], problem,
                                config, self.on_drift, sol.stats.steps_accepted)
            a = end[n:2 * n].view(shape) + grad_ys[i - 1]
            g = end[2 * n:]
        return a, split_like(g, params), nfe

    def per_sample_backward_pass(self, problem: Problem, ys: Tensor, context, grad_ys: Tensor):
        """Per-sample: [y, a] solved backwards, y reset to the stored output at each of the entry's
        output times (as here between segments, and torchdiffeq); the parameter integral by the
        backward steps' own Runge–Kutta quadrature (see :mod:`._per_sample`)."""
        return per_sample_backward(self, problem, ys, grad_ys, on_drift=self.on_drift)
