"""The Gauss–Legendre quadrature adjoint backend (``gradient="gq"``)."""

from __future__ import annotations

import math
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import odegrad
from odegrad.errors import InvalidInput
from odegrad.gradients import GaussQuadrature
from odegrad.gradients._base import MIN_NODE_MEMORY
from odegrad.gradients._quadrature import NODE_MEMORY_STATES, segment_rule

from .support import D, relative_error, tanh_mlp


def _grads(loss: torch.Tensor, inputs) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(inputs)))




# ---- linear ODE: exact gradients from the matrix exponential -----------------------------------

def _linear_problem(seed: int = 0):
    torch.manual_seed(seed)
    A = (0.4 * torch.randn(3, 3, dtype=D) - 0.3 * torch.eye(3, dtype=D)).requires_grad_()
    y0 = torch.randn(2, 3, dtype=D, requires_grad=True)  # a batch of two states
    t = torch.tensor([0.0, 0.4, 0.9, 1.5], dtype=D, requires_grad=True)
    weights = torch.randn(len(t), 2, 3, dtype=D)
    return A, y0, t, weights


def _exact_linear_grads(A, y0, t, weights):
    ys = torch.stack([y0 @ torch.linalg.matrix_exp(A * (ti - t[0])).T for ti in t])
    return _grads((ys * weights).sum(), (y0, A, t))


SOLVER_SETTINGS = {  # method: (options, relative tolerance of the gradient against the exact one)
    "euler": ({"step_size": 1e-3}, 5e-3),
    "midpoint": ({"step_size": 1e-2}, 1e-4),
    "heun": ({"step_size": 1e-2}, 1e-4),
    "rk4": ({"step_size": 1e-2}, 1e-7),
    "torchdiffeq:dopri5": ({}, 1e-7),
}


def _settings(method: str) -> tuple[dict, float]:
    """Known settings, else by kind: adaptive at the tight tolerance, fixed-step with h = 0.01 and a
    tolerance from the method's order (the gradient error of an order-p method scales like h^p)."""
    if method in SOLVER_SETTINGS:
        return SOLVER_SETTINGS[method]
    solver = odegrad.get_solver(method)
    if solver.error_estimate:
        return {}, 1e-7
    return {"step_size": 1e-2}, max(1e-7, 10 * 1e-2 ** solver.order)


# Low-order implicit methods take thousands of Newton-solved steps at rtol 1e-11; tests/test_stiff.py
# checks their gradients at stiff-problem tolerances.
SLOW_AT_TIGHT_TOLERANCES = ("kvaerno3", "kvaerno4")


@pytest.mark.parametrize("method", [*(m for m in odegrad.solver_names() if m not in SLOW_AT_TIGHT_TOLERANCES),
                                    "torchdiffeq:dopri5"])
def test_linear_ode_exact_gradients(method):
    options, tol = _settings(method)
    # Taylor steps cannot integrate an adjoint system built with autograd: it asks for a backward method.
    gradient = GaussQuadrature(method="rk4") if method == "taylor" else "gq"
    A, y0, t, weights = _linear_problem()
    exact = _exact_linear_grads(A, y0, t, weights)
    ys = odegrad.odeint(lambda tt, y: y @ A.T, y0, t, method=method, gradient=gradient, rtol=1e-11,
                        atol=1e-13, options=options or None, params=[A])
    got = _grads((ys * weights).sum(), (y0, A, t))
    for name, g, e in zip(("y0", "A", "t"), got, exact):
        assert relative_error(g, e) < tol, (method, name, relative_error(g, e))


@pytest.mark.parametrize("nodes", [None, 1, 2, 5, 32])
def test_linear_ode_any_node_count(nodes):
    # Within one segment a linear ODE's integrand is smooth, so a long segment needs the nodes:
    # one node (midpoint rule) is visibly worse, yet every count stays a valid gradient estimate.
    A, y0, t, weights = _linear_problem(1)
    exact = _exact_linear_grads(A, y0, t, weights)
    ys = odegrad.odeint(lambda tt, y: y @ A.T, y0, t, gradient=GaussQuadrature(nodes=nodes),
                        rtol=1e-11, atol=1e-13, params=[A])
    g_y0, g_A = _grads((ys * weights).sum(), (y0, A))
    assert relative_error(g_y0, exact[0]) < 1e-8
    assert relative_error(g_A, exact[1]) < {1: 0.05, 2: 1e-3}.get(nodes, 1e-7)


def test_segment_rule_is_exact_for_polynomials_in_both_directions():
    coeffs = np.random.default_rng(0).normal(size=8)  # degree 7 = 2·4 − 1
    poly = np.polynomial.Polynomial(coeffs)
    for start, end in ((1.3, 0.2), (-0.5, 2.0)):
        nodes, weights = segment_rule(start, end, 4)
        assert np.all(np.diff(nodes) * np.sign(end - start) > 0)  # ordered start → end
        integral = poly.integ()(start) - poly.integ()(end)
        assert math.isclose(float(weights @ poly(nodes)), integral, rel_tol=1e-13)


# ---- agreement with the other backends on nonlinear fields --------------------------------------

def _mlp_grads(func, y0, t, gradient, method="dopri5", rtol=1e-10, atol=1e-12, options=None):
    y0 = y0.detach().requires_grad_()
    ys = odegrad.odeint(func, y0, t, method=method, gradient=gradient, rtol=rtol, atol=atol, options=options)
    loss = (ys ** 2).sum() + ys[-1].sin().sum()
    return _grads(loss, (y0, *func.parameters()))


def _assert_close(got, reference, tol):
    for g, r in zip(got, reference):
        assert relative_error(g, r) < tol, relative_error(g, r)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_mlp_agrees_with_direct_and_backsolve(seed):
    func = tanh_mlp(seed=seed)
    y0 = torch.randn(4, 3, dtype=D)
    t = torch.linspace(0.0, 1.0, 5, dtype=D)
    gq = _mlp_grads(func, y0, t, "gq")
    _assert_close(gq, _mlp_grads(func, y0, t, "direct"), 1e-7)
    _assert_close(gq, _mlp_grads(func, y0, t, "backsolve"), 1e-7)


def test_default_rule_converges_the_quadrature_on_a_long_segment():
    # 17 forward steps in one segment. The backward steps do not depend on the node count (output
    # times never shorten steps), so comparing with 64 nodes isolates the quadrature error (up to
    # the backward dense output's ~1e-7); the reference rule (gtol 0.1, floor 1) leaves ~1e-5 here.
    func = tanh_mlp(seed=14, width=32)
    with torch.no_grad():
        for p in func.parameters():
            p.mul_(2.5)
    y0 = torch.randn(4, 3, dtype=D)
    t = torch.tensor([0.0, 3.0], dtype=D)
    converged = _mlp_grads(func, y0, t, GaussQuadrature(nodes=64), rtol=1e-6, atol=1e-8)
    _assert_close(_mlp_grads(func, y0, t, "gq", rtol=1e-6, atol=1e-8), converged, 5e-7)
    sparse = _mlp_grads(func, y0, t, GaussQuadrature(gtol=0.1, min_nodes=1), rtol=1e-6, atol=1e-8)
    assert max(relative_error(g, c) for g, c in zip(sparse, converged)) > 3e-6


def test_time_dependent_field():
    func = tanh_mlp(time=True, seed=2)
    y0 = torch.randn(5, 3, dtype=D)
    t = torch.tensor([0.5, 0.8, 1.6, 2.0], dtype=D)
    _assert_close(_mlp_grads(func, y0, t, "gq"), _mlp_grads(func, y0, t, "direct"), 1e-7)


def test_explicitly_time_dependent_closure_with_params():
    w = torch.tensor([0.7, -0.3], dtype=D, requires_grad=True)
    omega = torch.tensor(3.0, dtype=D, requires_grad=True)

    def func(t, y):
        return -w * y + torch.sin(omega * t) * y.flip(-1)

    y0 = torch.tensor([1.0, 0.5], dtype=D)
    t = torch.linspace(0.0, 2.0, 4, dtype=D)
    results = []
    for gradient in ("gq", "direct"):
        ys = odegrad.odeint(func, y0, t, gradient=gradient, rtol=1e-11, atol=1e-13, params=[w, omega])
        results.append(_grads(ys.pow(2).sum(), (w, omega)))
    _assert_close(*results, 1e-7)


@pytest.mark.parametrize("decreasing", [False, True])
def test_many_observation_times(decreasing):
    func = tanh_mlp(seed=3)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.linspace(0.0, 3.0, 60, dtype=D)
    if decreasing:
        t = t.flip(0)
    _assert_close(_mlp_grads(func, y0, t, "gq"), _mlp_grads(func, y0, t, "direct"), 1e-7)


def test_many_parameter_model():
    func = tanh_mlp(dim=4, width=256, seed=4)
    assert sum(p.numel() for p in func.parameters()) > 2000
    y0 = torch.randn(3, 4, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    gq = _mlp_grads(func, y0, t, "gq", rtol=1e-9, atol=1e-11)
    _assert_close(gq, _mlp_grads(func, y0, t, "direct", rtol=1e-11, atol=1e-13), 1e-6)


def test_wide_model_many_parameters():
    torch.manual_seed(5)
    func = nn.Sequential(nn.Linear(8, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 8)).to(D)
    field = lambda t, y: func(y)
    assert sum(p.numel() for p in func.parameters()) > 90_000
    y0 = torch.randn(2, 8, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.3], dtype=D)
    results = []
    for gradient in ("gq", "direct"):
        ys = odegrad.odeint(field, y0, t, gradient=gradient, rtol=1e-9, atol=1e-11, params=func.parameters())
        results.append(_grads(ys[-1].pow(2).sum(), (y0, *func.parameters())))
    _assert_close(*results, 1e-6)


@pytest.mark.parametrize("method,options", [("rk4", {"step_size": 0.01}),
                                            ("rk4", {"grid": np.linspace(0, 1, 101).tolist()}),
                                            ("torchdiffeq:dopri5", None),
                                            ("torchdiffeq:rk4", {"step_size": 0.005})])
def test_other_forward_integrators(method, options):
    func = tanh_mlp(seed=6)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=D)
    gq = _mlp_grads(func, y0, t, "gq", method=method, options=options)
    _assert_close(gq, _mlp_grads(func, y0, t, "direct"), 1e-6)


def test_backward_method_and_tolerances_are_configurable():
    func = tanh_mlp(seed=7)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    backend = GaussQuadrature(nodes=6, rtol=1e-11, atol=1e-13, method="tsit5")
    gq = _mlp_grads(func, y0, t, backend, rtol=1e-6, atol=1e-8)
    loose = _mlp_grads(func, y0, t, GaussQuadrature(nodes=6), rtol=1e-6, atol=1e-8)
    reference = _mlp_grads(func, y0, t, "direct", rtol=1e-12, atol=1e-14)
    # a tight backward solve gives accurate gradients even from a loose forward solve
    assert relative_error(gq[1], reference[1]) < 1e-5
    assert relative_error(gq[1], reference[1]) < relative_error(loose[1], reference[1])


def test_tuple_state():
    torch.manual_seed(8)
    W = torch.randn(2, 2, dtype=D, requires_grad=True)
    v = torch.randn(3, dtype=D, requires_grad=True)

    def func(t, state):
        x, z = state
        return torch.tanh(x @ W), -z * v.sum() + x.sum()

    x0, z0 = torch.randn(2, dtype=D, requires_grad=True), torch.randn(3, dtype=D, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=D)
    results = []
    for gradient in ("gq", "direct"):
        xs, zs = odegrad.odeint(func, (x0, z0), t, gradient=gradient, rtol=1e-10, atol=1e-12, params=[W, v])
        results.append(_grads(xs.pow(2).sum() + zs.sum(), (x0, z0, W, v)))
    _assert_close(*results, 1e-7)


# ---- batching of node VJPs ---------------------------------------------------------------------

class DataDependent(nn.Module):
    """A field vmap cannot batch: a Python branch on a tensor value."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.lin = nn.Linear(2, 2).to(D)

    def forward(self, t, y):
        scale = 2.0 if float(t) > 0.5 else 1.0
        return torch.tanh(self.lin(y)) * scale


def test_vmap_fallback_gives_the_same_gradient():
    y0 = torch.randn(3, 2, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    func = DataDependent()
    with pytest.warns(RuntimeWarning, match="vmap cannot batch func"):
        auto = _mlp_grads(func, y0, t, GaussQuadrature(nodes=4))
    looped = _mlp_grads(func, y0, t, GaussQuadrature(nodes=4, vectorize=False))
    _assert_close(auto, looped, 1e-12)
    _assert_close(auto, _mlp_grads(func, y0, t, "direct"), 1e-7)


def test_vectorized_equals_looped_and_chunking_is_exact():
    func = tanh_mlp(time=True, seed=10)
    y0 = torch.randn(2, 3, dtype=D)
    t = torch.linspace(0, 1, 6, dtype=D)
    reference = _mlp_grads(func, y0, t, GaussQuadrature(nodes=5, vectorize=False))
    _assert_close(_mlp_grads(func, y0, t, GaussQuadrature(nodes=5)), reference, 1e-12)
    _assert_close(_mlp_grads(func, y0, t, GaussQuadrature(nodes=5, max_batch=3)), reference, 1e-12)


# ---- node batches follow the memory budget -------------------------------------------------------

def test_node_batch_follows_the_budget():
    y0 = torch.zeros(10, 4, dtype=D)  # 320 bytes
    params = (torch.zeros(100, dtype=D),)
    per_node = 1000 + 6 * 320  # saved bytes of one evaluation + six state-sized tensors
    assert GaussQuadrature(node_memory=5 * per_node).node_batch(y0, params, 1000) == 5
    assert GaussQuadrature(node_memory=5 * per_node - 1).node_batch(y0, params, 1000) == 4
    assert GaussQuadrature(node_memory=1).node_batch(y0, params, 1000) == 1
    assert GaussQuadrature(node_memory=10 ** 9, max_batch=7).node_batch(y0, params, 1000) == 7
    # default budget: 8 copies of [y, a, θ], at least 256 KiB
    assert GaussQuadrature().node_batch(y0, params, 1000) == MIN_NODE_MEMORY // per_node
    large = (torch.zeros(10 ** 5, dtype=D),)
    budget = NODE_MEMORY_STATES * (2 * 40 + 10 ** 5) * 8
    assert GaussQuadrature().node_batch(y0, large, 10 ** 5) == budget // (10 ** 5 + 6 * 320)


class _LiveSavedBytes:
    """saved_tensors_hooks that track the bytes of distinct storage autograd holds for backward at
    once (a storage counts until the last saved tensor using it is released); ``skip``: storages
    that exist anyway (parameters)."""

    class _Saved:
        def __init__(self, tensor):
            self.tensor = tensor

    def __init__(self, skip):
        self.skip, self.users, self.sizes = skip, {}, {}
        self.live = self.peak = 0

    def pack(self, tensor):
        saved = self._Saved(tensor)
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.skip:
            if key not in self.users:
                self.users[key], self.sizes[key] = 0, storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.users[key] += 1
            weakref.finalize(saved, self._release, key)
        return saved

    def _release(self, key):
        self.users[key] -= 1
        if not self.users[key]:
            del self.users[key]
            self.live -= self.sizes.pop(key)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda saved: saved.tensor)


@pytest.mark.parametrize("batch", [8, 32])
@pytest.mark.parametrize("nodes", [4, 64])
def test_backward_working_set_stays_within_the_node_budget(batch, nodes):
    # What autograd holds at once during the backward pass — the batched node evaluations and the
    # adjoint system's VJPs — stays within the budget whatever the node count and the batch size
    # (with fixed batches of 16 it grew 4.5x from 4 to 64 nodes and 4x with the batch).
    func = tanh_mlp(width=64, seed=3)
    budget = 40_000
    y0 = torch.randn(batch, 3, dtype=D)
    ys = odegrad.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=D),
                        gradient=GaussQuadrature(nodes=nodes, node_memory=budget))
    tracker = _LiveSavedBytes({p.untyped_storage().data_ptr() for p in func.parameters()})
    with tracker.hooks():
        torch.autograd.grad(ys.square().sum(), list(func.parameters()))
    one_evaluation = batch * 64 * 8  # the tanh layer's output
    assert one_evaluation <= tracker.peak <= max(budget, 2 * one_evaluation)


@pytest.mark.parametrize("gradient", [GaussQuadrature(node_memory=1), GaussQuadrature(),
                                      GaussQuadrature(node_memory=10 ** 9), GaussQuadrature(nodes=40, node_memory=1)])
def test_gradients_do_not_depend_on_the_node_budget(gradient):
    func = tanh_mlp(time=True, seed=14)
    y0 = torch.randn(4, 3, dtype=D)
    t = torch.linspace(0, 2, 4, dtype=D)
    reference = _mlp_grads(func, y0, t, GaussQuadrature(nodes=40 if gradient.nodes else None,
                                                         vectorize=False, max_batch=1))
    _assert_close(_mlp_grads(func, y0, t, gradient), reference, 1e-12)
    _assert_close(_mlp_grads(func, y0, t, gradient), _mlp_grads(func, y0, t, "direct"), 1e-7)


def test_float32_nodes_that_round_together():
    # 64 nodes on a segment of length 1e-3 at t≈1000 collide in float32; the solve must still work.
    func = tanh_mlp(seed=11).float()
    y0 = torch.randn(2, 3)
    t = torch.tensor([1000.0, 1000.001, 1000.003])
    got = _mlp_grads(func, y0, t, GaussQuadrature(nodes=64), rtol=1e-6, atol=1e-8)
    reference = _mlp_grads(func, y0, t, "direct", rtol=1e-6, atol=1e-8)
    _assert_close(got, reference, 1e-3)


# ---- parameters, accounting, rules -------------------------------------------------------------

def test_unused_and_frozen_params_get_zero_gradients():
    func = tanh_mlp(seed=12)
    unused = torch.randn(4, dtype=D, requires_grad=True)
    frozen = torch.randn(2, dtype=D)
    y0 = torch.randn(2, 3, dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D)
    params = [*func.parameters(), unused, frozen]
    ys = odegrad.odeint(func, y0, t, gradient="gq", params=params)
    (g_unused,) = torch.autograd.grad(ys.sum(), [unused])
    assert torch.equal(g_unused, torch.zeros_like(unused))


def test_no_params_gives_y0_gradient():
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=D)
    y0 = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D)
    ys = odegrad.odeint(lambda tt, y: A @ y, y0, t, gradient="gq", rtol=1e-11, atol=1e-13)
    (g,) = torch.autograd.grad(ys[-1, 0], [y0])
    expected = torch.linalg.matrix_exp(A)[0]
    assert relative_error(g, expected) < 1e-8


def test_backward_nfe_counts_solves_and_nodes():
    func = tanh_mlp(seed=13)
    y0 = torch.randn(2, 3, dtype=D, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=D)
    solution = odegrad.solve(func, y0, t, gradient=GaussQuadrature(nodes=7))
    solution.ys.sum().backward()
    assert solution.stats.nfe_backward > 3 * 7  # three segments, seven nodes each, plus the solves


def test_node_rule():
    rule = GaussQuadrature(gtol=0.1, min_nodes=1, max_nodes=64)
    assert rule.node_count(0.5, 100) == 5  # ceil(0.1 · 100 · 0.5)
    assert rule.node_count(0.01, 100) == 1
    assert rule.node_count(1.0, 10_000) == 64
    assert GaussQuadrature().node_count(0.01, 100) == 3  # default floor
    assert GaussQuadrature(nodes=9).node_count(0.01, 100) == 9


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"nodes": 0}, {"nodes": -2}, {"nodes": 2.5}, {"nodes": True}, {"nodes": 1000},
                                    {"gtol": 0.0}, {"gtol": float("nan")}, {"max_nodes": 0}, {"min_nodes": 0},
                                    {"min_nodes": 10, "max_nodes": 5}, {"max_batch": 0}, {"vectorize": "yes"},
                                    {"node_memory": 0}, {"node_memory": 1.5},
                                    {"rtol": -1.0}])
def test_invalid_configuration(kwargs):
    with pytest.raises(InvalidInput) as info:
        GaussQuadrature(**kwargs)
    assert "GaussQuadrature" in str(info.value)


def test_invalid_node_count_message_names_argument():
    with pytest.raises(InvalidInput, match=r"nodes: got 0; expected an integer in \[1, 256\]"):
        GaussQuadrature(nodes=0)


def test_func_without_graph_has_zero_vjps():
    """An output that depends on neither y nor params differentiably (here detached) is a field
    like dy/dt = g(t): zero vector-Jacobian products, as torchdiffeq's adjoint gives (issue 14)."""
    w = torch.tensor(0.5, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D)
    ys = odegrad.odeint(lambda tt, y: (-w * y).detach(), y0, t, gradient="gq", params=[w])
    ys.sum().backward()
    assert float(w.grad) == 0.0 and float(y0.grad) == 2.0


def test_registered_by_name():
    assert "gq" in odegrad.backend_names()
    assert isinstance(odegrad.get_backend("gq"), GaussQuadrature)


def test_fields_that_save_sparse_tensors_get_gq_gradients():
    # A graph ODE with a sparse adjacency: autograd saves the sparse matrix, which has no plain
    # storage for the node budget's byte count.
    torch.manual_seed(0)
    adjacency = torch.eye(5, dtype=D).to_sparse()
    weight = nn.Parameter(0.3 * torch.randn(3, 3, dtype=D))
    field = lambda t, y: torch.tanh(torch.sparse.mm(adjacency, y @ weight))  # noqa: E731
    y0 = torch.randn(5, 3, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    grads = {}
    for gradient in ("direct", "gq"):
        ys = odegrad.odeint(field, y0, t, gradient=gradient, params=[weight], rtol=1e-10, atol=1e-12)
        (grads[gradient],) = torch.autograd.grad(ys[-1].sum(), weight)
    assert relative_error(grads["gq"], grads["direct"]) < 1e-7
