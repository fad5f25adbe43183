"""Regularizers that make learned dynamics cheap to integrate, passed as ``solve(..., regularization=)``.

* :class:`LocalRegularization` (Pal, Edelman & Rackauckas, ICML 2023): the adaptive solver's own
  error estimate EEst·|h| (and, ours, its Hairer–Wanner stiffness estimate) of **one re-executed
  step** at a sampled time t₁. The forward solve records the state at t₁ without gradient; only
  the re-executed step is differentiated, so the term composes with every gradient backend.
  ``sampling="unbiased"``: t₁ ~ Uniform over the span, and the solve lands a step on it (a forced
  stop), re-executing from there with the step size the controller proposes at t₁.
  ``sampling="biased"``: t₁ drawn uniformly from the solver's accepted steps (reservoir sampling
  during the solve: no extra stop, no stored trajectory), re-executing that step.
* :class:`Kinetic` (RNODE, Finlay et al., ICML 2020): ∫‖f‖² dt and a Hutchinson estimate of
  ∫‖∂f/∂y‖²_F dt, integrated as extra states of the ODE.
* :class:`TaylorOrder` (Kelly et al., NeurIPS 2020): ∫‖d^K y/dt^K‖² dt from Taylor-mode
  coefficients (:mod:`odegrad.jet`), integrated as an extra state.

The terms are averaged over the batch (the first dimension of a state with two or more
dimensions, or the common first dimension of a tuple state's parts) so that their weights do not
depend on the batch size or on how the state is split into parts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ._checks import check_choice, check_int, check_non_negative
from ._counting import counted
from .errors import InvalidInput, UnsupportedCombination
from .gradients import Problem
from .jet import taylor_coefficients
from .solvers import AcceptedStep, Solution, StepSolver, TimeAxis

SAMPLING = ("unbiased", "biased")


class Regularizer(ABC):
    """A training penalty computed alongside a solve.

    ``attach(problem)`` returns the problem to solve (with extra stops, an observer or augmented
    states) and a function turning its solution into ``(solution, term)``: the solution as the
    user sees it and a differentiable scalar term.
    """

    @abstractmethod
    def attach(self, problem: Problem) -> tuple[Problem, Callable[[Solution], tuple[Solution, Tensor]]]:
        """Prepare ``problem`` for this regularizer; see the class docstring."""


@dataclass
class Draw:
    """One sampled step that was re-executed: start time ``t``, start state ``y`` (detached,
    ``Tensor[*state]``) and step size ``h``."""

    t: float
    y: Tensor
    h: float


@dataclass
class _Sampler:
    """Observer of the forward solve that keeps the states at the sampled times (unbiased) or a
    uniform reservoir sample of the accepted steps (biased)."""

    times: list[float]
    samples: int
    biased: bool
    generator: torch.Generator | None
    draws: list[Draw | None] = field(default_factory=list)
    accepted: int = 0

    def __post_init__(self) -> None:
        self.draws = [None] * self.samples

    def __call__(self, step: AcceptedStep) -> None:
        if self.biased:
            self.accepted += 1
            keep = torch.rand(self.samples, generator=self.generator) * self.accepted < 1.0
            for i in keep.nonzero().flatten().tolist():
                self.draws[i] = Draw(step.t0, step.y0.detach(), step.h)
        else:
            for i, t in enumerate(self.times):
                if step.t1 == t:
                    self.draws[i] = Draw(step.t1, step.y1.detach(), step.next_h)


class LocalRegularization(Regularizer):
    """Local regularization of an adaptive solve (Pal, Edelman & Rackauckas, 2023).

    Args:
        error: weight λ_err of EEst·|h|, the re-executed step's scaled error estimate (the norm the
            controller compares with 1) times its step size.
        stiffness: weight λ_stiff of the same step's Hairer–Wanner stiffness estimate
            ‖k_s − k_{s−1}‖ / ‖g_s − g_{s−1}‖ · |h| (ours; the paper regularizes only the error).
        sampling: ``"unbiased"`` (t₁ uniform over the span; the solve stops there) or ``"biased"``
            (t₁ uniform over the solver's accepted steps; no extra stop).
        samples: number of draws k; the term is their mean.
        generator: ``torch.Generator`` for the draws (None: torch's global generator).

    After each solve ``last_draws`` holds the :class:`Draw` s that were re-executed.

    Works with odeint's own adaptive methods (``dopri5``, ``tsit5``, ``bosh3``, any embedded
    ExplicitRK) and every gradient backend; ``Solution.regularization`` is
    ``mean_k(λ_err · EEst_k·|h_k| + λ_stiff · stiffness_k)`` averaged over the batch, a scalar
    differentiable in func's parameters (through the re-executed steps only). Costs one
    re-executed step (a few evaluations of func) per draw, plus one forced stop per unbiased draw.
    """

    def __init__(self, error: float = 1e-2, stiffness: float = 0.0, sampling: str = "unbiased",
                 samples: int = 1, generator: torch.Generator | None = None):
        self.error = check_non_negative("error", error)
        self.stiffness = check_non_negative("stiffness", stiffness)
        self.sampling = check_choice("sampling", sampling, SAMPLING)
        self.samples = check_int("samples", samples, low=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InvalidInput("generator", type(generator).__name__, "None or a torch.Generator")
        self.generator = generator
        self.last_draws: list[Draw] = []

    def __repr__(self) -> str:
        return (f"LocalRegularization(error={self.error:g}, stiffness={self.stiffness:g}, "
                f"sampling={self.sampling!r}, samples={self.samples})")

    def attach(self, problem: Problem) -> tuple[Problem, Callable[[Solution], tuple[Solution, Tensor]]]:
        """Sample t₁ (unbiased: as forced stops) and observe the forward solve; the returned
        function re-executes the sampled steps and returns their mean weighted estimate."""
        solver = problem.solver
        if not (isinstance(solver, StepSolver) and solver.error_estimate and solver.evaluations_per_step):
            name = getattr(solver, "name", solver)
            raise UnsupportedCombination(
                f"local regularization re-executes one step of an adaptive method with its embedded "
                f"error estimate and controller step size; method {name!r} has none (fixed-step, "
                f"Taylor, or a torchdiffeq solver whose steps are not exposed). Use dopri5, tsit5 or "
                f"bosh3, or a global regularizer (Kinetic, TaylorOrder)")
        t0, t_end = float(problem.t[0]), float(problem.t[-1])
        times = []
        if self.sampling == "unbiased":
            u = torch.rand(self.samples, generator=self.generator, dtype=torch.float64).tolist()
            times = [t0 + (t_end - t0) * float(x) for x in u]
        sampler = _Sampler(times, self.samples, self.sampling == "biased", self.generator)
        config = problem.config.with_controller(stops=(*problem.config.controller.stops, *times))
        config = config.with_observer(sampler)

        def finish(solution: Solution) -> tuple[Solution, Tensor]:
            self.last_draws = [draw for draw in sampler.draws if draw is not None]
            terms = [self._term(problem, draw) for draw in self.last_draws]
            solution.stats.nfe_forward += len(terms) * (solver.evaluations_per_step + 1)  # init + one step
            if not terms:  # a solve of zero length takes no step
                return solution, problem.y0.new_zeros(())
            return solution, torch.stack(terms).mean()

        return replace(problem, config=config), finish

    def _term(self, problem: Problem, draw: Draw) -> Tensor:
        solver: StepSolver = problem.solver
        config = problem.config
        func = counted(problem.func, problem.t.dtype)
        with torch.enable_grad():
            y = draw.y.detach()
            result = solver.step(func, draw.t, draw.h, y, solver.init(func, draw.t, y))
            error = config.controller.error_ratio(y, result.y1, result.error)
            term = self.error * error * abs(draw.h)
            if self.stiffness:
                term = term + self.stiffness * result.stiffness()
        return term


class _AugmentedField:
    """``d[y, r]/dt = [f(t, y), g(t, y, f)]``: the state flattened with the regularizer's
    accumulators ``r`` (``Tensor[terms]``) appended. With ``needs_y_graph`` the integrand may
    differentiate f with respect to y, even inside the no-grad forward pass of adjoint backends
    (the output is then returned without a graph)."""

    def __init__(self, func, shape: torch.Size, integrand: Callable[[Tensor, Tensor, Tensor], Tensor],
                 needs_y_graph: bool):
        self.func = func
        self.shape = shape
        self.size = math.prod(shape)
        self.integrand = integrand
        self.needs_y_graph = needs_y_graph

    def __call__(self, t: Tensor, state: Tensor) -> Tensor:
        if not self.needs_y_graph:
            return self._evaluate(t, state)
        grad_enabled = torch.is_grad_enabled()
        with torch.enable_grad():
            out = self._evaluate(t, state if state.requires_grad else state.detach().requires_grad_())
        return out if grad_enabled else out.detach()

    def _evaluate(self, t: Tensor, state: Tensor) -> Tensor:
        y = state[:self.size].view(self.shape)
        f = self.func(t, y)
        return torch.cat([f.reshape(-1), self.integrand(t, y, f).to(state.dtype)])


def _augment(problem: Problem, terms: int, integrand: Callable[[Tensor, Tensor, Tensor], Tensor],
             weights: Tensor, needs_y_graph: bool = False
             ) -> tuple[Problem, Callable[[Solution], tuple[Solution, Tensor]]]:
    shape = problem.y0.shape
    field_ = _AugmentedField(problem.func, shape, integrand, needs_y_graph)
    y0 = torch.cat([problem.y0.reshape(-1), problem.y0.new_zeros(terms)])
    def state(augmented: Tensor) -> Tensor:  # [*lead, size + terms] -> [*lead, *shape]
        return augmented[..., :field_.size].reshape(*augmented.shape[:-1], *shape)

    def finish(solution: Solution) -> tuple[Solution, Tensor]:
        ys = solution.ys
        accumulated = ys[-1, field_.size:]
        solution.ys = state(ys)
        if solution.dense is not None:
            solution.dense.map_output(state)
        axis = TimeAxis.of(float(problem.t[0]), float(problem.t[-1]))  # the integral runs along the solve
        return solution, axis.along((weights.to(accumulated) * accumulated).sum()) / problem.batch_size

    return replace(problem, func=field_, y0=y0), finish


class Kinetic(Regularizer):
    """RNODE's regularizers (Finlay et al., 2020): ``kinetic · ∫‖f‖² dt + jacobian · ∫‖∂f/∂y‖²_F dt``,
    integrated as two extra states; the Frobenius norm by a Hutchinson estimate ‖εᵀ ∂f/∂y‖² with
    ε ~ N(0, I) drawn once per solve (from ``generator``). Averaged over the batch.

    Args:
        kinetic, jacobian: the weights (non-negative; at least one positive).
        generator: ``torch.Generator`` for ε (None: torch's global generator).
    """

    def __init__(self, kinetic: float = 1e-2, jacobian: float = 1e-2, generator: torch.Generator | None = None):
        self.kinetic = check_non_negative("kinetic", kinetic)
        self.jacobian = check_non_negative("jacobian", jacobian)
        if self.kinetic == 0 and self.jacobian == 0:
            raise InvalidInput("kinetic/jacobian", "both 0", "at least one positive weight")
        self.generator = generator

    def __repr__(self) -> str:
        return f"Kinetic(kinetic={self.kinetic:g}, jacobian={self.jacobian:g})"

    def attach(self, problem: Problem) -> tuple[Problem, Callable[[Solution], tuple[Solution, Tensor]]]:
        """Augment the state with ∫‖f‖² and ∫‖εᵀ∂f/∂y‖²."""
        epsilon = torch.randn(problem.y0.shape, generator=self.generator, dtype=problem.y0.dtype)
        epsilon = epsilon.to(problem.y0.device)
        jacobian = self.jacobian > 0

        def integrand(t: Tensor, y: Tensor, f: Tensor) -> Tensor:
            kinetic = f.pow(2).sum()
            if not jacobian:
                return torch.stack([kinetic, torch.zeros_like(kinetic)])
            (vjp,) = torch.autograd.grad(f, y, epsilon, create_graph=True)
            return torch.stack([kinetic, vjp.pow(2).sum()])

        weights = torch.tensor([self.kinetic, self.jacobian], dtype=torch.float64)
        return _augment(problem, 2, integrand, weights, needs_y_graph=jacobian)


class TaylorOrder(Regularizer):
    """Kelly et al. (2020): ``weight · ∫‖d^K y/dt^K‖² dt``, the K-th total time derivative of the
    solution from Taylor-mode coefficients (``K! · y_K``, :func:`odegrad.jet.taylor_coefficients`),
    integrated as an extra state. Averaged over the batch. func must be built from ops with a
    Taylor rule (:func:`odegrad.jet.supported_ops`).

    Args:
        order: K >= 1 (K = 1 is the kinetic energy ∫‖f‖²); near the solver's order is typical.
        weight: the weight (non-negative).
    """

    def __init__(self, order: int = 2, weight: float = 1e-2):
        self.order = check_int("order", order, low=1)
        self.weight = check_non_negative("weight", weight)

    def __repr__(self) -> str:
        return f"TaylorOrder(order={self.order}, weight={self.weight:g})"

    def attach(self, problem: Problem) -> tuple[Problem, Callable[[Solution], tuple[Solution, Tensor]]]:
        """Augment the state with ∫‖d^K y/dt^K‖²."""
        order, factorial = self.order, float(math.factorial(self.order))

        def integrand(t: Tensor, y: Tensor, f: Tensor) -> Tensor:
            coefficients = taylor_coefficients(problem.func, t, y, order, f0=f)
            return (factorial * coefficients[order]).pow(2).sum().reshape(1)

        return _augment(problem, 1, integrand, torch.tensor([self.weight], dtype=torch.float64))


def check_regularizer(value: Any) -> Regularizer | None:
    """``value`` as a Regularizer (None allowed), or InvalidInput naming the argument."""
    if value is not None and not isinstance(value, Regularizer):
        raise InvalidInput("regularization", type(value).__name__,
                           "None, LocalRegularization(...), Kinetic(...) or TaylorOrder(...)")
    return value


__all__ = ["Draw", "Kinetic", "LocalRegularization", "Regularizer", "SAMPLING", "TaylorOrder", "check_regularizer"]
