"""The interpolation adjoint backend (``gradient="interp"``, IRDM)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import odegrad
from odegrad.errors import InterpolationError, InvalidInput
from odegrad.gradients import Backsolve, Interpolation, Problem, backend_names
from odegrad.gradients._interpolation import Checkpoint, _StepWindows
from odegrad.solvers import IntegrationConfig, PIController, get_solver

from .support import D, relative_error, tanh_mlp


class Linear(nn.Module):
    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, y):
        return y @ self.A.T


def _gradients(func, y0, t, gradient, method="dopri5", weights=None, **kwargs):
    """(dL/dy0, dL/dt, dL/dθ...) of L = Σ weights · ys."""
    y0 = y0.detach().clone().requires_grad_()
    t = t.detach().clone().requires_grad_()
    ys = odegrad.odeint(func, y0, t, method=method, gradient=gradient, **kwargs)
    weights = torch.linspace(-1.0, 1.0, ys.numel(), dtype=ys.dtype).view_as(ys) if weights is None else weights
    return torch.autograd.grad((ys * weights).sum(), (y0, t, *func.parameters()))


def _cat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


# ---- exact gradients of a linear ODE -----------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_linear_ode_matches_matrix_exponential(reverse):
    torch.manual_seed(1)
    A = 0.4 * torch.randn(3, 3, dtype=D) - 0.3 * torch.eye(3, dtype=D)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.tensor([0.0, 0.4, 0.9, 1.5], dtype=D)
    if reverse:
        t = t.flip(0)
    weights = torch.randn(len(t), 2, 3, dtype=D)

    A_ = A.clone().requires_grad_()
    y0_ = y0.clone().requires_grad_()
    t_ = t.clone().requires_grad_()
    ys = torch.stack([y0_ @ torch.linalg.matrix_exp(A_ * (ti - t_[0])).T for ti in t_])
    exact = torch.autograd.grad((ys * weights).sum(), (y0_, t_, A_))

    got = _gradients(Linear(A), y0, t, "interp", weights=weights, rtol=1e-10, atol=1e-12)
    for g, e in zip(got, exact):
        assert relative_error(g, e) < 1e-7


# ---- agreement with the other backends on random MLP fields -------------------------------------

SOLVERS = [  # method, options, relative agreement expected with direct
    ("dopri5", None, 1e-6),
    ("tsit5", None, 1e-6),
    ("bosh3", None, 1e-5),
    ("rk4", {"step_size": 0.05}, 1e-6),
    ("rk4", None, 1e-4),  # one step per segment: the discretisations of the adjoints differ
    ("torchdiffeq:dopri5", None, 1e-6),
    ("torchdiffeq:rk4", {"step_size": 0.05}, 1e-6),
]


@pytest.mark.parametrize("method,options,tol", SOLVERS)
def test_agrees_with_direct_and_backsolve(method, options, tol):
    func = tanh_mlp(time=True)
    y0 = torch.randn(4, 3, dtype=D)
    t = torch.tensor([0.0, 0.3, 0.8, 1.6], dtype=D)
    kw = dict(method=method, options=options, rtol=1e-8, atol=1e-10)
    interp = _cat(_gradients(func, y0, t, "interp", **kw))
    direct = _cat(_gradients(func, y0, t, "direct", **kw))
    backsolve = _cat(_gradients(func, y0, t, "backsolve", **kw))
    assert relative_error(interp, direct) < tol
    assert relative_error(interp, backsolve) < tol


def test_agrees_with_gq():
    assert "gq" in backend_names()  # registered by odegrad itself: its absence is a failure, not a skip
    func = tanh_mlp(seed=3)
    y0 = torch.randn(5, 3, dtype=D)
    t = torch.linspace(0.0, 2.0, 6, dtype=D)
    interp = _cat(_gradients(func, y0, t, "interp", rtol=1e-9, atol=1e-11))
    gq = _cat(_gradients(func, y0, t, "gq", rtol=1e-9, atol=1e-11))
    assert relative_error(interp, gq) < 1e-6


def test_reverse_time_fixed_step_without_dense_output():
    # torchdiffeq interpolates output times between grid points linearly; interp must sample the
    # trajectory by the method's own (shortened) steps and still agree with the other backends.
    func = tanh_mlp(seed=8)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.linspace(1.0, -1.0, 4, dtype=D)
    kw = dict(method="torchdiffeq:rk4", options={"step_size": 0.1})
    interp = _cat(_gradients(func, y0, t, "interp", **kw))
    backsolve = _cat(_gradients(func, y0, t, "backsolve", **kw))
    assert relative_error(interp, backsolve) < 1e-3  # both O(h^4) approximations of the continuous adjoint


def test_float32_times_without_dense_output():
    func = tanh_mlp(seed=9).float()
    y0 = torch.randn(4, 3)
    t = torch.linspace(0.0, 2.0, 5)
    got = _cat(_gradients(func, y0, t, "interp", method="torchdiffeq:dopri5"))
    ref = _cat(_gradients(func.double(), y0.double(), t.double(), "direct", rtol=1e-10, atol=1e-12))
    assert relative_error(got.double(), ref) < 1e-5


def test_taylor_forward_with_rk4_backward():
    assert "taylor" in odegrad.solver_names()  # registered by odegrad itself: a failure, not a skip
    func = tanh_mlp(seed=10)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.linspace(0.0, 1.0, 3, dtype=D)
    kw = dict(method="taylor", options={"step_size": 0.05})
    interp = _cat(_gradients(func, y0, t, Interpolation(method="rk4"), **kw))
    direct = _cat(_gradients(func, y0, t, "direct", **kw))
    assert relative_error(interp, direct) < 1e-5


def test_tuple_state():
    torch.manual_seed(2)
    net = tanh_mlp(dim=3, seed=2)

    def func(t, state):
        x, v = state
        return v, net(t, x) - 0.1 * v

    x0, v0 = torch.randn(2, 3, dtype=D, requires_grad=True), torch.randn(2, 3, dtype=D, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 4, dtype=D)
    results = {}
    for gradient in ("direct", "interp"):
        xs, vs = odegrad.odeint(func, (x0, v0), t, gradient=gradient, rtol=1e-9, atol=1e-11,
                                params=list(net.parameters()))
        loss = (xs ** 2).sum() + vs.sum()
        results[gradient] = _cat(torch.autograd.grad(loss, (x0, v0, *net.parameters())))
    assert relative_error(results["interp"], results["direct"]) < 1e-6


def test_unused_parameter_gets_zero_gradient():
    func = tanh_mlp(seed=4)
    func.unused = nn.Parameter(torch.ones(3, dtype=D))
    y0 = torch.randn(2, 3, dtype=D)
    ys = odegrad.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=D), gradient="interp")
    ys.sum().backward()
    assert func.unused.grad is not None and torch.equal(func.unused.grad, torch.zeros(3, dtype=D))


def test_float32_state_with_float32_times():
    func = tanh_mlp(seed=5).float()
    y0 = torch.randn(8, 3)
    t = torch.linspace(0.0, 1.0, 5)
    got = _cat(_gradients(func, y0, t, "interp", rtol=1e-5, atol=1e-7))
    ref = _cat(_gradients(func.double(), y0.double(), t.double(), "direct", rtol=1e-10, atol=1e-12))
    assert relative_error(got.double(), ref) < 1e-4


# ---- where the reverse-dynamics adjoint fails --------------------------------------------------

def test_dissipative_system_backsolve_inaccurate_interp_accurate():
    # Modes decaying at rates 1 and 30: integrating y backwards amplifies the forward error of the
    # fast mode by e^{30·T}; interp never integrates y backwards.
    Q = torch.tensor([[1.0, 0.3], [0.0, 1.0]], dtype=D)
    A = Q @ torch.diag(torch.tensor([-1.0, -30.0], dtype=D)) @ torch.linalg.inv(Q)
    y0 = torch.tensor([1.0, 1.0], dtype=D)
    T = 2.0
    A_ = A.clone().requires_grad_()
    exact = torch.autograd.grad((torch.linalg.matrix_exp(A_ * T) @ y0).sum(), A_)[0]
    errors = {}
    for gradient in (Backsolve(on_drift="warn"), "interp"):
        func = Linear(A)
        ys = odegrad.odeint(func, y0, torch.tensor([0.0, T], dtype=D), gradient=gradient,
                            rtol=1e-6, atol=1e-8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ys[-1].sum().backward()
        errors[getattr(gradient, "name", gradient)] = relative_error(func.A.grad, exact)
        assert bool(caught) == (gradient != "interp")  # backsolve says its gradient is wrong
    assert errors["interp"] < 1e-6
    assert errors["backsolve"] > 1e-2


# ---- the automatic node rule and the accuracy check ---------------------------------------------

def _forward(backend, func, y0, t, method="dopri5", **config):
    problem = Problem(func=func, y0=y0, t=t, solver=get_solver(method),
                      config=IntegrationConfig(controller=PIController(**config)), params=tuple(func.parameters()))
    with torch.no_grad():
        return backend.forward_pass(problem)


def test_automatic_nodes_reproduce_dense_output_on_a_long_segment():
    func = tanh_mlp(seed=6, width=32)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.tensor([0.0, 6.0], dtype=D)
    _, trajectory = _forward(Interpolation(), func, y0, t, rtol=1e-9, atol=1e-11)
    assert trajectory.nodes > Interpolation().min_nodes  # a long segment needs more than the minimum
    with torch.no_grad():
        sol = get_solver("dopri5").integrate(func, y0, t, IntegrationConfig(PIController(rtol=1e-9, atol=1e-11)),
                                             keep_dense=True)
    for x in torch.linspace(0.0, 6.0, 37, dtype=D).tolist():
        exact = sol.dense.evaluate(x)
        assert float((trajectory(x) - exact).abs().max()) <= 10 * (1e-11 + 1e-9 * float(exact.abs().max()))


def test_segment_is_split_when_max_nodes_is_not_enough():
    func = tanh_mlp(seed=6, width=32)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.tensor([0.0, 6.0], dtype=D)
    _, trajectory = _forward(Interpolation(max_nodes=8), func, y0, t, rtol=1e-9, atol=1e-11)
    assert len(trajectory.pieces) > 1
    assert all(piece.n <= 8 for piece in trajectory.pieces)


def test_forward_keeps_at_most_window_steps(monkeypatch):
    # The forward pass fits pieces as the steps come and drops the steps behind them, instead of
    # keeping the whole dense output (stages of every step) until the end.
    kept = []
    fit = _StepWindows._fit

    def spy(self, end):
        kept.append(len(self.steps))
        fit(self, end)

    monkeypatch.setattr(_StepWindows, "_fit", spy)
    func = tanh_mlp(seed=6, width=32)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.tensor([0.0, 2.0, 6.0], dtype=D)
    solution, trajectory = _forward(Interpolation(window=3), func, y0, t, rtol=1e-9, atol=1e-11)
    assert solution.dense is None
    assert max(kept) <= 3
    assert len(trajectory.pieces) >= solution.stats.steps_accepted / 3


@pytest.mark.parametrize("window", [1, 3, 1000])
def test_gradients_do_not_depend_on_the_window(window):
    func = tanh_mlp(time=True, seed=8, width=32)
    y0 = torch.randn(4, 3, dtype=D)
    t = torch.tensor([0.0, 0.5, 4.0], dtype=D)
    kw = dict(rtol=1e-9, atol=1e-11)
    got = _cat(_gradients(func, y0, t, Interpolation(window=window), **kw))
    assert relative_error(got, _cat(_gradients(func, y0, t, "direct", **kw))) < 1e-6


@pytest.mark.parametrize("node_memory", [1, 3000])
def test_stored_nodes_stay_within_node_memory(node_memory):
    # Past the budget the oldest stretches keep only their start state and are solved again in
    # the backward pass: same gradients, more backward evaluations, bounded storage.
    func = tanh_mlp(time=True, seed=8, width=32)
    y0 = torch.randn(4, 3, dtype=D)
    t = torch.tensor([0.0, 0.5, 4.0], dtype=D)
    backend = Interpolation(window=3, node_memory=node_memory)
    _, trajectory = _forward(backend, func, y0, t, rtol=1e-9, atol=1e-11)
    stored = [piece for piece in trajectory.pieces if not isinstance(piece, Checkpoint)]
    assert sum(piece.values.nbytes for piece in stored) <= node_memory
    assert len(stored) < len(trajectory.pieces)
    kw = dict(rtol=1e-9, atol=1e-11)
    got = _cat(_gradients(func, y0, t, backend, **kw))
    assert relative_error(got, _cat(_gradients(func, y0, t, "direct", **kw))) < 1e-6
    unbounded = odegrad.solve(func, y0.clone().requires_grad_(), t, gradient=Interpolation(window=3), **kw)
    bounded = odegrad.solve(func, y0.clone().requires_grad_(), t, gradient=backend, **kw)
    for solution in (unbounded, bounded):
        solution.ys.sum().backward()
    assert bounded.stats.nfe_backward > unbounded.stats.nfe_backward


def test_fixed_node_count_is_used():
    func = tanh_mlp(seed=7)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.linspace(0.0, 0.5, 4, dtype=D)
    _, trajectory = _forward(Interpolation(nodes=12), func, y0, t)
    assert [piece.n for piece in trajectory.pieces] == [12, 12, 12]


def test_inaccurate_interpolant_raises():
    func = tanh_mlp(seed=6, width=32)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.tensor([0.0, 6.0], dtype=D)
    with pytest.raises(InterpolationError, match="held-out"):
        odegrad.odeint(func, y0, t, gradient=Interpolation(nodes=3, max_pieces=1), rtol=1e-9, atol=1e-11)


def test_inaccurate_interpolant_warns_when_asked():
    func = tanh_mlp(seed=6, width=32)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.tensor([0.0, 6.0], dtype=D)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = odegrad.odeint(func, y0, t, gradient=Interpolation(nodes=3, max_pieces=1, on_failure="warn"),
                            rtol=1e-9, atol=1e-11)
    assert any("held-out" in str(w.message) for w in caught)
    assert torch.isfinite(ys).all()


def test_torchdiffeq_forward_checks_without_dense_output():
    # No dense output: held-out points are extra output times; a failed check re-solves the segment.
    func = tanh_mlp(seed=6, width=32)
    y0 = torch.randn(3, 3, dtype=D)
    t = torch.tensor([0.0, 6.0], dtype=D)
    solution, trajectory = _forward(Interpolation(), func, y0, t, method="torchdiffeq:dopri5",
                                    rtol=1e-9, atol=1e-11)
    assert trajectory.nodes > Interpolation().min_nodes
    tolerances = IntegrationConfig(PIController(rtol=1e-9, atol=1e-11))
    plain = get_solver("torchdiffeq:dopri5").integrate(func, y0, t, tolerances)
    assert torch.allclose(solution.ys, plain.ys, rtol=1e-8, atol=1e-10)
    with pytest.raises(InterpolationError):
        _forward(Interpolation(nodes=3, max_pieces=1), func, y0, t, method="torchdiffeq:dopri5",
                 rtol=1e-9, atol=1e-11)


# ---- argument checking --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,argument", [
    (dict(nodes=1), "nodes"),
    (dict(nodes=4.0), "nodes"),
    (dict(min_nodes=16, max_nodes=8), "min_nodes"),
    (dict(max_pieces=0), "max_pieces"),
    (dict(window=0), "window"),
    (dict(node_memory=0), "node_memory"),
    (dict(check_rtol=-1.0), "check_rtol"),
    (dict(on_failure="ignore"), "on_failure"),
    (dict(rtol=-1.0), "rtol"),
])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(InvalidInput, match=argument):
        Interpolation(**kwargs)


def test_registered_by_name():
    assert "interp" in backend_names()
    assert isinstance(odegrad.get_backend("interp"), Interpolation)


def test_rebuilding_checkpointed_stretches_leaves_the_forward_observer_alone():
    # The backward pass solves checkpointed stretches again; the forward solve's observer (here
    # local regularization's biased sampler, which draws from the global RNG) must not see those
    # steps: backward consumes no random numbers and keeps the forward's draws.
    func = tanh_mlp(time=True, seed=8, width=32)
    y0 = torch.randn(4, 3, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 4.0], dtype=D)
    regularizer = odegrad.regularization.LocalRegularization(sampling="biased")
    solution = odegrad.solve(func, y0, t, gradient=Interpolation(window=3, node_memory=1),
                             regularization=regularizer, rtol=1e-9, atol=1e-11)
    state = torch.random.get_rng_state()
    (solution.ys.sum() + solution.regularization).backward()
    assert torch.equal(torch.random.get_rng_state(), state)
